"""Base resolution: from the reference a recipe names to a checked base in the output layout.

* ``scratch``: nothing.
* ``oci:PATH[:TAG]``: an OCI image layout. A relative PATH is inside the repository being
  built (and may not lead out of it through a symlink); an absolute PATH must lie under one
  of the builder's ``oci_roots``, so a repository cannot name another tenant's build output
  or any other directory of the build machine.
* ``REGISTRY/REPO@sha256:…``: fetched through a caller-supplied
  :class:`~ccpipe.stages.build.base.blob_sources.FetchBlob` (the registry client lives in
  ``stages/deploy``); every byte is checked against the pinned digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccpipe.oci.documents import Descriptor, Platform
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.digest import SHA256_ONLY, is_digest
from ccpipe.stages.build._fs import is_within, resolve_beneath
from ccpipe.stages.build.base.blob_sources import FetchBlob, LayoutSource, RegistrySource
from ccpipe.stages.build.base.fs_index import BaseFilesystem, BaseIndexCache
from ccpipe.stages.build.base.load import load_base
from ccpipe.stages.build.errors import BaseForbidden, BaseNotFound
from ccpipe.stages.build.image_defaults import host_platform


@dataclass(frozen=True)
class BaseSources:
    """What the builder may read base images from."""

    oci_roots: tuple[Path, ...] = ()
    """Directories under which absolute ``oci:`` paths are allowed."""
    fetch_blob: FetchBlob | None = None
    """Registry access for ``REGISTRY/REPO@sha256:…`` bases; ``None`` refuses them."""
    platform: Platform = field(default_factory=host_platform)
    """The platform picked from a multi-platform base."""
    index_cache: BaseIndexCache | None = None
    """File-system indexes of bases already checked, shared by the builds that share these sources."""


@dataclass(frozen=True)
class BaseImage:
    """A base image whose layers are in the output layout and have been checked."""

    reference: str
    """As the recipe wrote it."""
    uri: str | None
    """Where it came from, in skopeo's transport syntax (``oci:PATH:TAG``, ``docker://…``)."""
    manifest_digest: str | None
    """Digest of the manifest used (``None`` for scratch)."""
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    fs: BaseFilesystem


def scratch(platform: Platform) -> BaseImage:
    """The empty base."""
    config: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    return BaseImage("scratch", None, None, config, (), (), BaseFilesystem())


def parse_oci_reference(ref: str) -> tuple[str, str | None]:
    """Split ``oci:PATH[:TAG]`` (the ``oci:`` already removed or not) into PATH and TAG."""
    rest = ref.removeprefix("oci:")
    path, sep, tag = rest.rpartition(":")
    if sep and path and tag and "/" not in tag:
        return path, tag
    return rest, None


def resolve_base(
    reference: str,
    layout: OciLayout,
    *,
    context: Path | None,
    sources: BaseSources = BaseSources(),
) -> BaseImage:
    """Bring the base the recipe names into ``layout`` and describe it.

    ``context`` is the repository tree that relative ``oci:`` paths live in. Raises a
    :class:`BaseImageError` leaf naming the reference.
    """
    if reference == "scratch":
        return scratch(sources.platform)
    if reference.startswith("oci:"):
        path_s, tag = parse_oci_reference(reference)
        path = _allowed_layout_path(path_s, context, sources.oci_roots, reference)
        try:
            src_layout = OciLayout.open(path)
            top = src_layout.resolve(tag)
        except OciLayoutError as exc:
            raise BaseNotFound(f"base {reference}: {exc.message}", hint=exc.hint) from exc
        got = load_base(
            LayoutSource(src_layout), top.digest, layout, sources.platform, reference, index_cache=sources.index_cache
        )
        uri = f"oci:{path}" + (f":{tag}" if tag else "")
        return BaseImage(reference, uri, got.digest, got.config, got.layers, got.diff_ids, got.fs)
    repo, _, digest = reference.rpartition("@")
    if not repo or re.search(r"[@\s]", repo) or not is_digest(digest, SHA256_ONLY):
        raise BaseNotFound(f"base {reference!r} is not 'scratch', 'oci:PATH[:TAG]' or 'REGISTRY/REPO@sha256:…'")
    if sources.fetch_blob is None:
        raise BaseNotFound(
            f"base {reference} is in a registry, and this build has no registry access",
            hint="run the build with a registry client, or import the base into an OCI layout first",
        )
    source = RegistrySource(sources.fetch_blob, repo)
    got = load_base(source, digest, layout, sources.platform, reference, index_cache=sources.index_cache)
    uri = f"docker://{repo}@{got.digest}"
    return BaseImage(reference, uri, got.digest, got.config, got.layers, got.diff_ids, got.fs)


def _allowed_layout_path(path_s: str, context: Path | None, roots: tuple[Path, ...], reference: str) -> Path:
    if not path_s:
        raise BaseNotFound(f"base {reference!r} names no path")
    if not path_s.startswith("/"):
        if context is None:
            raise BaseForbidden(f"base {reference}: a relative oci: path needs a repository to live in")
        return resolve_beneath(context, path_s, "base layout", follow_last=True)
    resolved = Path(path_s).resolve()
    for root in roots:
        if is_within(Path(root).resolve(), resolved):
            return resolved
    allowed = ", ".join(str(r) for r in roots) or "none configured"
    raise BaseForbidden(f"base {reference}: {path_s} is not under an allowed base directory ({allowed})")
