"""What the runner reads from a (decrypted) OCI image: its layers and its run configuration.

:func:`read_image` opens one single-platform image manifest in an OCI layout by digest (the
layout module checks every digest) and returns its layers, with the config's ``diff_ids``, and
the parts of the config the sandbox needs (:class:`RunConfig`). Pure: paths in, dataclasses out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpipe.enclave_runner.errors import ImageInvalid
from ccpipe.enclave_runner.unpack import LayerSource
from ccpipe.oci.documents import INDEX_MEDIA_TYPES, ImageManifest, parse_document
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout


@dataclass(frozen=True)
class RunConfig:
    """The image config's ``config`` object, as the sandbox uses it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """``KEY=VALUE`` strings, in the image's order."""
    workdir: str = "/"
    user: str = ""

    @property
    def argv(self) -> list[str]:
        """Entrypoint followed by cmd, as container runtimes combine them."""
        return [*self.entrypoint, *self.cmd]


@dataclass(frozen=True)
class Image:
    """One image of a layout: its manifest digest, layers (base first) and run configuration."""

    digest: str
    layers: tuple[LayerSource, ...]
    config: RunConfig


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageInvalid(f"image config field {what} is not a list of strings")
    return tuple(value)


def run_config(config: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a parsed image config; raises :class:`ImageInvalid` on bad types."""
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ImageInvalid("image config field config is not an object")
    workdir = inner.get("WorkingDir") or "/"
    user = inner.get("User") or ""
    if not isinstance(workdir, str) or not isinstance(user, str):
        raise ImageInvalid("image config fields WorkingDir and User must be strings")
    return RunConfig(
        entrypoint=_strings(inner.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(inner.get("Cmd"), "Cmd"),
        env=_strings(inner.get("Env"), "Env"),
        workdir=workdir,
        user=user,
    )


def read_image(layout_dir: Path, digest: str) -> Image:
    """The image whose manifest is ``digest`` in the layout ``layout_dir``.

    Raises :class:`ImageInvalid` for an index, a missing or damaged blob, a layer count that does
    not match the config's ``diff_ids``, or a layer that is still encrypted.
    """
    try:
        layout = OciLayout.open(layout_dir)
        raw = layout.read_blob(digest)
        manifest = parse_document(ImageManifest, raw, f"manifest {digest}")
        if manifest.media_type in INDEX_MEDIA_TYPES:
            raise ImageInvalid(f"{digest} is an image index; the runner runs single-platform images")
        config = layout.read_json(manifest.config)
    except OciLayoutError as exc:
        raise ImageInvalid(f"image {digest} cannot be read from {layout_dir}: {exc.message}") from exc
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise ImageInvalid(f"image {digest}: config rootfs.diff_ids does not list one entry per layer")
    layers = []
    for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if desc.media_type.endswith("+encrypted"):
            raise ImageInvalid(f"image {digest}: layer {desc.digest} is still encrypted")
        layers.append(LayerSource(layout.blob_path(desc.digest), desc.media_type, str(diff_id), desc.digest))
    return Image(digest, tuple(layers), run_config(config))
