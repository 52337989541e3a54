"""Base images: where an image starts from.

* ``scratch``: nothing.
* ``oci:PATH[:TAG]``: an OCI image layout. A relative PATH is inside the repository being
  built (and may not lead out of it through a symlink); an absolute PATH must lie under one
  of the builder's ``oci_roots``, so a repository cannot name another tenant's build output
  or any other directory of the build machine.
* ``REGISTRY/REPO@sha256:…``: fetched through a caller-supplied :class:`FetchBlob` (the
  registry client lives in ``stages/deploy``); every byte is checked against the pinned digest.

Whatever the source, the base's layers are copied into the output layout with their digests
checked, then read once more (decompressed) to check each ``diff_id`` against the base config
and to index the base's file system: the image builder uses that index so that a copy never
replaces a base directory's metadata (``/tmp`` stays 1777) nor a base symlink (``/bin`` on a
merged-/usr base stays a symlink).

Also here: :func:`make_busybox_base`, a deterministic base made from Debian's
``busybox-static`` (no registry needed), and :func:`import_base`, which turns an OCI layout,
an ``oci-archive`` or a ``docker-archive`` tarball into a tagged base in a layout.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

from zlib_ng import gzip_ng

from ccpipe.oci.documents import (
    ANNOTATION_CREATED,
    DOCKER_MEDIA_TYPE_LAYER_GZIP,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_document,
)
from ccpipe.oci.errors import BlobDigestMismatch, OciLayoutError
from ccpipe.oci.layout import OciLayout, check_blob_digest
from ccpipe.schemas.digest import SHA256_ONLY, is_digest
from ccpipe.stages.build._fs import is_within, resolve_beneath
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseForbidden, BaseImageError, BaseNotFound, BaseUnsupported
from ccpipe.stages.build.layer import (
    DEFAULT_COMPRESSION,
    Compression,
    EntryType,
    LayerEntry,
    gzip_tar_stream,
    write_layer,
)

_LAYER_MEDIA_TYPES = {
    MEDIA_TYPE_LAYER_GZIP: MEDIA_TYPE_LAYER_GZIP,
    DOCKER_MEDIA_TYPE_LAYER_GZIP: MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER: MEDIA_TYPE_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar": MEDIA_TYPE_LAYER,
}
_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_platform() -> Platform:
    """linux/<this machine's architecture, as Go names it>."""
    machine = _platform.machine()
    return Platform(architecture=_GOARCH.get(machine, machine), os="linux")


class FetchBlob(Protocol):
    """Reads content from a registry by digest (supplied by the registry client's owner).

    ``repository`` is ``REGISTRY/REPO`` as the recipe wrote it. With ``manifest=True`` the
    digest names a manifest or an index (the registry's ``/manifests/`` endpoint), otherwise a
    blob (``/blobs/``). Returns the content, whole or in chunks; the caller checks the digest.
    Raises :class:`ccpipe.schemas.errors.TransientError` for failures worth retrying.
    """

    def __call__(self, repository: str, digest: str, /, *, manifest: bool) -> bytes | Iterable[bytes]: ...


@dataclass(frozen=True)
class BaseSources:
    """What the builder may read base images from."""

    oci_roots: tuple[Path, ...] = ()
    """Directories under which absolute ``oci:`` paths are allowed."""
    fetch_blob: FetchBlob | None = None
    """Registry access for ``REGISTRY/REPO@sha256:…`` bases; ``None`` refuses them."""
    platform: Platform = field(default_factory=host_platform)
    """The platform picked from a multi-platform base."""


# -- the base's file system ------------------------------------------------------------------


class BaseFilesystem:
    """Which paths the base's layers create, after whiteouts, as kind + symlink target."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, ...], tuple[str, str]] = {}

    def apply(self, members: Iterable[tarfile.TarInfo]) -> None:
        """Apply one layer's entries, in order (whiteouts remove what lower layers made)."""
        for m in members:
            parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
            if not parts or ".." in parts:
                continue
            base = parts[-1]
            if base == ".wh..wh..opq":
                self._drop_children(parts[:-1])
                continue
            if base.startswith(".wh."):
                target = (*parts[:-1], base[4:])
                self.nodes.pop(target, None)
                self._drop_children(target)
                continue
            if m.isdir():
                self.nodes[parts] = ("dir", "")
            elif m.issym():
                self.nodes[parts] = ("symlink", m.linkname)
            else:
                if self.nodes.get(parts, ("", ""))[0] == "dir":
                    self._drop_children(parts)
                self.nodes[parts] = ("file", "")

    def _drop_children(self, parent: tuple[str, ...]) -> None:
        n = len(parent)
        for key in [k for k in self.nodes if len(k) > n and k[:n] == parent]:
            del self.nodes[key]

    def lookup(self, parts: list[str] | tuple[str, ...], *, follow_last: bool = False) -> str | None:
        """Kind of what is at ``parts`` ("dir", "symlink", "file") or ``None``.

        Symlinks in the parents are followed inside the image root, as a runtime extracting a
        layer would; the last component is followed only with ``follow_last``.
        """
        todo = list(parts)
        resolved: list[str] = []
        hops = 0
        kind = "dir"
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                kind = "dir"
                continue
            node = self.nodes.get((*resolved, name))
            if node is None:
                return None
            kind, link = node
            if kind == "symlink" and (todo or follow_last):
                hops += 1
                if hops > 40:
                    return None
                if link.startswith("/"):
                    resolved = []
                todo = link.split("/") + todo
                continue
            if todo and kind != "dir":
                return None
            resolved.append(name)
        return kind


# -- the resolved base -----------------------------------------------------------------------


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


class _Source(Protocol):
    def read(self, digest: str, *, manifest: bool) -> bytes: ...
    def chunks(self, desc: Descriptor) -> Iterable[bytes]: ...


class _LayoutSource:
    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout

    def read(self, digest: str, *, manifest: bool) -> bytes:
        return self.layout.read_blob(digest)

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        return self.layout.iter_blob(desc.digest, verify=False)


class _RegistrySource:
    def __init__(self, fetch: FetchBlob, repository: str) -> None:
        self.fetch = fetch
        self.repository = repository

    def _chunks(self, digest: str, manifest: bool) -> Iterator[bytes]:
        got = self.fetch(self.repository, digest, manifest=manifest)
        if isinstance(got, bytes | bytearray):
            yield bytes(got)
        else:
            yield from got

    def read(self, digest: str, *, manifest: bool) -> bytes:
        data = b"".join(self._chunks(digest, manifest))
        alg = check_blob_digest(digest)[0]
        if f"{alg}:{hashlib.new(alg, data).hexdigest()}" != digest:
            raise BaseDigestMismatch(f"{self.repository}: content fetched for {digest} does not match that digest")
        return data

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        return self._chunks(desc.digest, False)


class _ArchiveSource:
    """Blobs of an ``oci-archive`` (a tar of an OCI layout), read in place."""

    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self.tar = tar
        self.path = path
        self.members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        f = self.tar.extractfile(member) if member else None
        if f is None:
            raise BaseNotFound(f"{self.path} has no {name}")
        return f

    def read(self, digest: str, *, manifest: bool) -> bytes:
        alg, hexpart = check_blob_digest(digest)
        data = self.open(f"blobs/{alg}/{hexpart}").read()
        if f"{alg}:{hashlib.new(alg, data).hexdigest()}" != digest:
            raise BaseDigestMismatch(f"{self.path}: blob {digest} does not match its digest")
        return data

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        alg, hexpart = check_blob_digest(desc.digest)
        f = self.open(f"blobs/{alg}/{hexpart}")
        while chunk := f.read(1 << 20):
            yield chunk


def _pick_manifest(source: _Source, digest: str, platform: Platform, what: str) -> tuple[str, ImageManifest]:
    """Follow indexes down to the platform's image manifest; returns its digest and content."""
    for _ in range(4):
        raw = source.read(digest, manifest=True)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BaseImageError(f"{what}: {digest} is not JSON") from exc
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and (media_type in INDEX_MEDIA_TYPES or (media_type is None and "manifests" in doc)):
            index = parse_document(ImageIndex, raw, f"{what} index {digest}")
            candidates = [
                d
                for d in index.manifests
                if d.platform is not None
                and d.platform.os == platform.os
                and d.platform.architecture == platform.architecture
                and (platform.variant is None or d.platform.variant == platform.variant)
            ]
            if not candidates:
                have = (
                    ", ".join(f"{d.platform.os}/{d.platform.architecture}" for d in index.manifests if d.platform)
                    or "no platforms"
                )
                raise BaseNotFound(f"{what} has no {platform.os}/{platform.architecture} image (it has {have})")
            digest = candidates[0].digest
            continue
        if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
            raise BaseUnsupported(f"{what} is a Docker schema 1 manifest, which is not supported")
        return digest, parse_document(ImageManifest, raw, f"{what} manifest {digest}")
    raise BaseImageError(f"{what}: indexes nested too deep")


@dataclass(frozen=True)
class _Loaded:
    digest: str
    manifest: ImageManifest
    config_raw: bytes
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    fs: BaseFilesystem


def _load(source: _Source, top_digest: str, layout: OciLayout, platform: Platform, what: str) -> _Loaded:
    """Copy the platform image's layers into ``layout``, checking digests and diff_ids."""
    digest, manifest = _pick_manifest(source, top_digest, platform, what)
    config_raw = source.read(manifest.config.digest, manifest=False)
    try:
        config = json.loads(config_raw)
        diff_ids = tuple(config["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: config {manifest.config.digest} has no rootfs.diff_ids") from exc
    if len(diff_ids) != len(manifest.layers):
        raise BaseImageError(
            f"{what}: {len(manifest.layers)} layers but {len(diff_ids)} diff_ids in the config",
            code="build.base.inconsistent",
        )
    layers = []
    for layer in manifest.layers:
        media_type = _LAYER_MEDIA_TYPES.get(layer.media_type)
        if media_type is None:
            raise BaseUnsupported(
                f"{what}: layer {layer.digest} has media type {layer.media_type}; "
                "only gzip and uncompressed tar layers are supported"
            )
        desc = Descriptor(media_type=media_type, digest=layer.digest, size=layer.size)
        try:
            layout.add_blob(source.chunks(layer), desc)
        except BlobDigestMismatch as exc:
            raise BaseDigestMismatch(f"{what}: {exc.message}") from exc
        layers.append(desc)
    fs = BaseFilesystem()
    for desc, diff_id in zip(layers, diff_ids, strict=True):
        got = _index_layer(layout, desc, fs)
        if got != diff_id:
            raise BaseDigestMismatch(f"{what}: layer {desc.digest} unpacks to {got}, the config says {diff_id}")
    return _Loaded(digest, manifest, config_raw, config, tuple(layers), diff_ids, fs)


class _HashingReader:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def _index_layer(layout: OciLayout, desc: Descriptor, fs: BaseFilesystem) -> str:
    """Read a layer's tar headers into ``fs``; returns the sha256 of the uncompressed tar."""
    with layout.blob_path(desc.digest).open("rb") as raw:
        stream: IO[bytes] = raw
        if desc.media_type.endswith("+gzip"):
            stream = cast("IO[bytes]", gzip_ng.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
        reader = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                fs.apply(tar)
            while reader.read(1 << 20):
                pass
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BaseImageError(f"layer {desc.digest} is not a readable tar: {exc}") from exc
    return "sha256:" + reader.h.hexdigest()


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
        got = _load(_LayoutSource(src_layout), top.digest, layout, sources.platform, reference)
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
    source = _RegistrySource(sources.fetch_blob, repo)
    got = _load(source, digest, layout, sources.platform, reference)
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


# -- making and importing bases --------------------------------------------------------------

_ELF_MACHINES = {
    0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0x03: "386", 0x15: "ppc64le", 0x16: "s390x", 0xF3: "riscv64",
}  # fmt: skip


def _elf_architecture(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order))


def busybox_applets(busybox: Path) -> list[str]:
    """The applet names the busybox binary reports (``busybox --list``), sorted."""
    try:
        out = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaseNotFound(
            f"{busybox} cannot list its applets: {exc}",
            hint="install Debian's busybox-static (scripts/install-system-deps.sh)",
        ) from exc
    names = {n for n in out.decode().split() if re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", n) and n != "busybox"}
    return sorted(names)


def make_busybox_base(
    layout_dir: Path,
    *,
    tag: str = "busybox",
    busybox: Path = Path("/bin/busybox"),
    source_date_epoch: int = 0,
    compression: Compression = DEFAULT_COMPRESSION,
) -> Descriptor:
    """Make a small, deterministic base image from a static busybox binary.

    One layer: ``/bin/busybox`` and a symlink ``/bin/<applet> -> busybox`` per applet (sh,
    echo, cat, ls, …), ``/etc/passwd`` and ``/etc/group`` (root, nobody), ``/root`` (0700)
    and ``/tmp`` (1777); every mtime is ``source_date_epoch``. The same binary always gives
    the same manifest digest. Returns the tagged manifest descriptor.
    """
    busybox = Path(busybox)
    if not busybox.is_file():
        raise BaseNotFound(f"{busybox} does not exist", hint="install Debian's busybox-static package")
    arch = _elf_architecture(busybox) or host_platform().architecture
    sde = source_date_epoch
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    group = b"root:x:0:\nnogroup:x:65534:\n"
    entries = [
        LayerEntry("bin", EntryType.DIR, 0o755, mtime=sde),
        LayerEntry("bin/busybox", EntryType.FILE, 0o755, mtime=sde, size=busybox.stat().st_size, source=busybox),
        LayerEntry("etc", EntryType.DIR, 0o755, mtime=sde),
        LayerEntry("etc/passwd", EntryType.FILE, 0o644, mtime=sde, size=len(passwd), data=passwd),
        LayerEntry("etc/group", EntryType.FILE, 0o644, mtime=sde, size=len(group), data=group),
        LayerEntry("root", EntryType.DIR, 0o700, mtime=sde),
        LayerEntry("tmp", EntryType.DIR, 0o1777, mtime=sde),
    ]
    entries += [
        LayerEntry(f"bin/{name}", EntryType.SYMLINK, 0o777, mtime=sde, linkname="busybox")
        for name in busybox_applets(busybox)
    ]
    layout = OciLayout.open_or_create(layout_dir)
    layer = write_layer(layout, entries, source_date_epoch=sde, compression=compression)
    created = rfc3339(sde)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created, "created_by": "ccpipe busybox base", "comment": "ccpipe"}],
    }
    return layout.write_image(config, [layer.descriptor], tag=tag, annotations={ANNOTATION_CREATED: created})


def rfc3339(epoch: int) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` of a Unix time."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_base(
    source: Path,
    layout_dir: Path,
    *,
    tag: str,
    source_tag: str | None = None,
    platform: Platform | None = None,
    compression: Compression = DEFAULT_COMPRESSION,
) -> Descriptor:
    """Import an image into the layout at ``layout_dir`` under ``tag``, for use as ``oci:`` base.

    ``source`` is an OCI layout directory, an ``oci-archive`` tarball (a tar of a layout, as
    ``skopeo copy … oci-archive:F``) or a ``docker-archive`` tarball (``docker save``,
    ``skopeo copy … docker-archive:F``). ``source_tag`` picks one image of several. Every blob
    is checked against its digest and every layer against its diff_id. Returns the tagged
    manifest descriptor.
    """
    source = Path(source)
    plat = platform or host_platform()
    layout = OciLayout.open_or_create(layout_dir)
    if source.is_dir():
        try:
            src = OciLayout.open(source)
            top = src.resolve(source_tag)
        except OciLayoutError as exc:
            raise BaseNotFound(f"{source}: {exc.message}") from exc
        return _import_from(_LayoutSource(src), top.digest, layout, plat, tag, str(source))
    try:
        tar = tarfile.open(source, mode="r:")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BaseNotFound(f"{source} is neither an OCI layout nor a readable tar archive: {exc}") from exc
    with tar:
        arch = _ArchiveSource(tar, source)
        if "oci-layout" in arch.members and "index.json" in arch.members:
            index = parse_document(ImageIndex, arch.open("index.json").read(), f"{source} index.json")
            top = _pick_ref(index, source_tag, str(source))
            return _import_from(arch, top.digest, layout, plat, tag, str(source))
        if "manifest.json" in arch.members:
            return _import_docker_archive(arch, layout, tag, source_tag, compression)
    raise BaseUnsupported(f"{source} is not an oci-archive or docker-archive (no index.json or manifest.json)")


def _pick_ref(index: ImageIndex, name: str | None, what: str) -> Descriptor:
    if name is None:
        if len(index.manifests) == 1:
            return index.manifests[0]
        raise BaseNotFound(f"{what} holds {len(index.manifests)} images: name one")
    for d in index.manifests:
        if d.ref_name == name:
            return d
    raise BaseNotFound(f"{what} has no image called {name!r}")


def _import_from(
    source: _Source, top_digest: str, layout: OciLayout, platform: Platform, tag: str, what: str
) -> Descriptor:
    got = _load(source, top_digest, layout, platform, what)
    m = got.manifest
    config_desc = Descriptor(media_type=MEDIA_TYPE_CONFIG, digest=m.config.digest, size=m.config.size)
    layout.add_blob([got.config_raw], config_desc)
    already_oci = (
        m.media_type in (None, MEDIA_TYPE_MANIFEST)
        and m.config.media_type == MEDIA_TYPE_CONFIG
        and [d.media_type for d in m.layers] == [d.media_type for d in got.layers]
    )
    if already_oci:  # keep the manifest's own bytes, so its digest survives the import
        raw = source.read(got.digest, manifest=True)
        desc = layout.add_blob([raw], Descriptor(media_type=MEDIA_TYPE_MANIFEST, digest=got.digest, size=len(raw)))
    else:  # Docker schema 2: an OCI manifest over the same blobs
        oci = ImageManifest(config=config_desc, layers=list(got.layers), annotations=m.annotations)
        desc = layout.write_document(oci, MEDIA_TYPE_MANIFEST)
    return layout.tag(desc, tag)


def _import_docker_archive(
    arch: _ArchiveSource, layout: OciLayout, tag: str, source_tag: str | None, compression: Compression
) -> Descriptor:
    what = str(arch.path)
    try:
        entries = json.loads(arch.open("manifest.json").read())
        if source_tag is None:
            if len(entries) != 1:
                raise BaseNotFound(f"{what} holds {len(entries)} images: name one")
            entry = entries[0]
        else:
            entry = next(e for e in entries if source_tag in (e.get("RepoTags") or []))
        config_name, layer_names = entry["Config"], entry["Layers"]
    except StopIteration:
        raise BaseNotFound(f"{what} has no image tagged {source_tag!r}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: manifest.json is not a docker-archive manifest") from exc
    config_raw = arch.open(config_name).read()
    try:
        config = json.loads(config_raw)
        diff_ids = list(config["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: {config_name} has no rootfs.diff_ids") from exc
    if len(diff_ids) != len(layer_names):
        raise BaseImageError(f"{what}: {len(layer_names)} layers but {len(diff_ids)} diff_ids")
    layers = []
    fs = BaseFilesystem()
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        f = arch.open(name)
        head = f.read(2)
        chunks = _prepend(head, f)
        if head == b"\x1f\x8b":
            with layout.blob_writer(MEDIA_TYPE_LAYER_GZIP) as w:
                for c in chunks:
                    w.write(c)
                layer_desc = w.commit()
            got = _index_layer(layout, layer_desc, fs)
        else:
            result = gzip_tar_stream(layout, chunks, compression=compression)
            layer_desc, got = result.descriptor, result.diff_id
        if got != diff_id:
            raise BaseDigestMismatch(f"{what}: layer {name} unpacks to {got}, the config says {diff_id}")
        layers.append(layer_desc)
    config_desc = layout.write_blob(config_raw, MEDIA_TYPE_CONFIG)
    manifest = ImageManifest(config=config_desc, layers=layers)
    return layout.tag(layout.write_document(manifest, MEDIA_TYPE_MANIFEST), tag)


def _prepend(head: bytes, f: IO[bytes]) -> Iterator[bytes]:
    yield head
    while chunk := f.read(1 << 20):
        yield chunk
