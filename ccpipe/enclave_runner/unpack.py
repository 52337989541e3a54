"""Safe unpacking of OCI image layers into one root directory.

Each layer is a tar stream (uncompressed or gzip) applied on top of the ones before it, as the
OCI image spec's "Applying changesets" describes:

* ``.wh.<name>`` deletes ``<name>`` of a lower layer in the same directory, and is not
  created itself; ``.wh..wh..opq`` (opaque marker) deletes every lower-layer child of its
  directory. Entries of the *same* layer are never hidden by its own whiteouts, whatever
  the order of the entries in the tar (the spec's rule): the runner remembers what this
  layer wrote, by directory inode and name;
* an entry replaces what is at its path (a directory entry over a directory merges).

What is refused (:class:`~ccpipe.enclave_runner.errors.UnsafeLayerEntry`, naming the layer and the
entry), so nothing is ever written outside the root:

* absolute member names, ``..`` components, NUL bytes, over-long names;
* symlinks whose target leaves the root (resolved from the physical directory the link is
  created in; absolute targets are taken relative to the root, as inside the sandbox);
* hardlinks whose target is absolute, contains ``..``, leaves the root, does not exist in the
  image or is a directory;
* character and block devices, fifos and any other entry type (sockets, volume headers).

Every path is resolved one component at a time from a file descriptor of the root, with
``O_NOFOLLOW`` on every open: a symlink met on the way is read (never followed by the
kernel), and its target is resolved the same way, refusing any step above the root. So an
earlier entry ``evil -> ../../etc`` followed by ``evil/passwd`` is refused, and a symlink
``bin -> usr/bin`` followed by ``bin/sh`` writes ``usr/bin/sh`` as a container runtime does.

Setuid and setgid bits are stripped (and counted); sticky is kept on directories only.
Ownership is not applied: every file belongs to the runner's user, which is the user the
sandbox maps the workload's uid onto, so the workload can read what its mode bits allow.
Limits (:class:`UnpackLimits`) bound the entries, the bytes written, the size of one file and
the decompressed stream (a gzip bomb stops at the limit). The decompressed stream is hashed
and compared with the layer's ``diff_id`` when one is given.

Malformed tar headers and gzip streams are read through :mod:`ccpipe.oci.tar_stream`, so every
one is a :class:`~ccpipe.enclave_runner.errors.LayerFormatError`.

Pure core: standard library, :mod:`zlib_ng` and :mod:`ccpipe.oci.tar_stream` only, no NATS, no network.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zlib_ng import gzip_ng

from ccpipe.enclave_runner.errors import LayerFormatError, LayerLimitExceeded, UnpackError, UnsafeLayerEntry
from ccpipe.enclave_runner.rootfs import DIR_FLAGS, RootDir, remove_entry, remove_tree
from ccpipe.oci.tar_stream import LAYER_READ_ERRORS, open_tar_stream, tar_members

MiB = 1 << 20
GiB = 1 << 30
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
MEDIA_TYPES_TAR = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)
MEDIA_TYPES_GZIP = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
_CHUNK = MiB
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on what one image may unpack to (all layers together)."""

    max_entries: int = 200_000
    """Tar entries of all layers, whiteouts and directories included."""
    max_total_bytes: int = 8 * GiB
    """Bytes of regular-file content written, all layers together."""
    max_file_bytes: int = 4 * GiB
    """Bytes of one regular file."""
    max_path_bytes: int = 4096
    """Length of one member name (and of a link target)."""
    max_symlink_hops: int = 40
    """Symlinks followed while resolving one path (the kernel's ELOOP limit)."""

    def stream_cap(self) -> int:
        """Most decompressed bytes a layer stream may hold: the content plus generous tar overhead."""
        return self.max_total_bytes + self.max_entries * 2048 + MiB


@dataclass
class UnpackStats:
    """What unpacking did, image-wide."""

    layers: int = 0
    entries: int = 0
    bytes_written: int = 0
    whiteouts: int = 0
    stripped_modes: int = 0
    """Entries whose setuid/setgid bits were removed."""
    stripped_examples: list[str] = field(default_factory=list)
    """The first few such entry names (for the log)."""


@dataclass(frozen=True)
class LayerSource:
    """One layer blob to apply: its file, media type and, when known, its diff_id."""

    path: Path
    media_type: str
    diff_id: str | None = None
    name: str = ""
    """How errors name the layer (its digest); defaults to the file name."""


class _CountingReader:
    """Reads a decompressed stream, hashing it and refusing more than ``cap`` bytes."""

    def __init__(self, inner: BinaryIO, cap: int, layer: str) -> None:
        self._inner, self._cap, self._layer = inner, cap, layer
        self.count = 0
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        want = _CHUNK if size is None or size < 0 else size
        data = self._inner.read(want)
        self.count += len(data)
        if self.count > self._cap:
            raise LayerLimitExceeded(
                f"layer {self._layer}: decompressed stream exceeds {self._cap} bytes (possible decompression bomb)"
            )
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _name_parts(name: str, layer: str, limits: UnpackLimits, what: str = "entry") -> list[str]:
    """The components of a member name, refusing absolute paths, ``..`` and oddities."""
    where = f"layer {layer}: {what} {name!r}"
    if "\0" in name:
        raise UnsafeLayerEntry(f"{where} contains a NUL byte")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_bytes:
        raise UnsafeLayerEntry(f"{where} is longer than {limits.max_path_bytes} bytes")
    if name.startswith("/"):
        raise UnsafeLayerEntry(f"{where} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerEntry(f"{where} contains '..'")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise UnsafeLayerEntry(f"{where} has a component longer than 255 bytes")
    return parts


def _key(parent: int, name: str) -> tuple[int, int, str]:
    st = os.fstat(parent)
    return st.st_dev, st.st_ino, name


def _clear_lower(dirfd: int, written: set[tuple[int, int, str]]) -> None:
    """Opaque directory: remove every child not written by the current layer (recursively)."""
    for name in os.listdir(dirfd):
        if _key(dirfd, name) not in written:
            remove_entry(dirfd, name)
            continue
        st = os.lstat(name, dir_fd=dirfd)
        if stat.S_ISDIR(st.st_mode):
            child = os.open(name, DIR_FLAGS, dir_fd=dirfd)
            try:
                _clear_lower(child, written)
            finally:
                os.close(child)


class _LayerApplier:
    """Applies the entries of one layer; shared state lives in the image-wide stats."""

    def __init__(
        self, root: RootDir, layer: str, stats: UnpackStats, deferred: list[tuple[list[str], int]],
        limits: UnpackLimits,
    ) -> None:
        self.root, self.layer, self.stats, self.deferred, self.limits = root, layer, stats, deferred, limits
        self.written: set[tuple[int, int, str]] = set()

    def where(self, member: tarfile.TarInfo) -> str:
        return f"layer {self.layer}: entry {member.name!r}"

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_entries:
            raise LayerLimitExceeded(
                f"layer {self.layer}: more than {self.limits.max_entries} entries in the image (at {member.name!r})"
            )
        where = self.where(member)
        parts = _name_parts(member.name, self.layer, self.limits)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                    tarfile.FIFOTYPE: "a fifo"}.get(member.type, f"of unsupported type {member.type!r}")
            raise UnsafeLayerEntry(f"{where} is {kind}; the runner never creates device nodes or special files")
        if not parts:  # the root itself ("./"): nothing to create
            return
        *dir_parts, name = parts
        if name.startswith(WHITEOUT_PREFIX):
            self.whiteout(dir_parts, name, where)
            return
        found = self.root.walk(dir_parts, create=True, where=where)
        assert found is not None  # create=True never yields None
        parent, names = found
        try:
            if member.isdir():
                self.directory(parent, name, member, parts)
            elif member.issym():
                self.symlink(parent, len(names), name, member, where)
            elif member.islnk():
                self.hardlink(parent, name, member, where)
            else:
                self.regular(parent, name, member, tar, where)
            self.written.add(_key(parent, name))
        finally:
            os.close(parent)

    def safe_mode(self, member: tarfile.TarInfo, keep: int) -> int:
        mode = member.mode & 0o7777
        if mode & 0o6000:
            self.stats.stripped_modes += 1
            if len(self.stats.stripped_examples) < 10:
                self.stats.stripped_examples.append(f"{self.layer}:{member.name}")
        return mode & keep

    def whiteout(self, dir_parts: list[str], name: str, where: str) -> None:
        self.stats.whiteouts += 1
        if name == OPAQUE_MARKER:
            found = self.root.walk(dir_parts, create=True, where=where)
            assert found is not None
            try:
                _clear_lower(found[0], self.written)
            finally:
                os.close(found[0])
            return
        target = name[len(WHITEOUT_PREFIX):]
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise UnsafeLayerEntry(f"{where} is a whiteout of {target!r}, which names no entry")
        found = self.root.walk(dir_parts, create=False, where=where)
        if found is None:
            return  # nothing below to hide
        try:
            if _key(found[0], target) not in self.written:
                remove_entry(found[0], target)
        finally:
            os.close(found[0])

    def directory(self, parent: int, name: str, member: tarfile.TarInfo, parts: list[str]) -> None:
        try:
            st = os.lstat(name, dir_fd=parent)
            if not stat.S_ISDIR(st.st_mode):
                remove_entry(parent, name)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent)
        mode = self.safe_mode(member, 0o1777)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        try:
            # keep the owner able to write while later entries land; the exact mode is applied at the end
            os.fchmod(fd, mode | 0o700)
        finally:
            os.close(fd)
        if mode & 0o700 != 0o700:
            self.deferred.append((parts, mode))

    def symlink(self, parent: int, depth: int, name: str, member: tarfile.TarInfo, where: str) -> None:
        target = member.linkname
        if not target or "\0" in target or len(target.encode("utf-8", "surrogateescape")) > self.limits.max_path_bytes:
            raise UnsafeLayerEntry(f"{where} is a symlink with an empty, NUL-containing or over-long target")
        level = 0 if target.startswith("/") else depth
        for comp in target.split("/"):
            if comp == "..":
                level -= 1
                if level < 0:
                    raise UnsafeLayerEntry(f"{where} is a symlink to {target!r}, which points outside the root")
            elif comp not in ("", "."):
                level += 1
        remove_entry(parent, name)
        os.symlink(target, name, dir_fd=parent)

    def hardlink(self, parent: int, name: str, member: tarfile.TarInfo, where: str) -> None:
        src_parts = _name_parts(member.linkname, self.layer, self.limits, what=f"hardlink target of {member.name!r}")
        if not src_parts:
            raise UnsafeLayerEntry(f"{where} is a hardlink to the root directory")
        *src_dir, src_name = src_parts
        found = self.root.walk(src_dir, create=False, where=f"{where} (hardlink target)")
        if found is None:
            raise UnsafeLayerEntry(f"{where} is a hardlink to {member.linkname!r}, which is not in the image")
        src_parent = found[0]
        try:
            try:
                st = os.lstat(src_name, dir_fd=src_parent)
            except FileNotFoundError:
                raise UnsafeLayerEntry(
                    f"{where} is a hardlink to {member.linkname!r}, which is not in the image"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayerEntry(f"{where} is a hardlink to the directory {member.linkname!r}")
            if os.fstat(src_parent).st_ino == os.fstat(parent).st_ino and src_name == name:
                return
            remove_entry(parent, name)
            os.link(src_name, name, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(src_parent)

    def regular(self, parent: int, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile, where: str) -> None:
        size = member.size
        if size > self.limits.max_file_bytes:
            raise LayerLimitExceeded(f"{where} is {size} bytes; one file may hold {self.limits.max_file_bytes}")
        if self.stats.bytes_written + size > self.limits.max_total_bytes:
            raise LayerLimitExceeded(
                f"{where}: the image's files exceed {self.limits.max_total_bytes} bytes"
            )
        remove_entry(parent, name)
        src = tar.extractfile(member)
        if src is None:
            raise LayerFormatError(f"{where} has no content")
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            written = 0
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if written != size:
                raise LayerFormatError(f"{where} is truncated ({written} of {size} bytes)")
            os.fchmod(fd, self.safe_mode(member, 0o777))
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        self.stats.bytes_written += size


def _open_stream(source: BinaryIO, media_type: str, layer: str) -> BinaryIO:
    if media_type in MEDIA_TYPES_TAR:
        return source
    if media_type in MEDIA_TYPES_GZIP:
        return gzip_ng.GzipFile(fileobj=source, mode="rb")  # type: ignore[no-untyped-call,return-value]
    raise LayerFormatError(
        f"layer {layer}: media type {media_type!r} is not supported (only tar and tar+gzip layers)",
        code="runner.unpack.mediatype",
    )


def apply_layer_stream(
    source: BinaryIO,
    root: Path,
    *,
    media_type: str = "application/vnd.oci.image.layer.v1.tar",
    layer: str = "layer",
    diff_id: str | None = None,
    limits: UnpackLimits | None = None,
    stats: UnpackStats | None = None,
    _deferred: list[tuple[list[str], int]] | None = None,
) -> UnpackStats:
    """Apply one layer (a readable binary stream) on top of ``root``; returns the running stats.

    ``root`` must be an existing directory. ``stats`` carries the image-wide counters between
    layers (the limits apply to their sum). Raises :class:`UnsafeLayerEntry`,
    :class:`LayerLimitExceeded` and :class:`LayerFormatError` (not a tar, unsupported media
    type, diff_id mismatch), each naming the layer and the entry; what the layer wrote before
    the refusal stays inside ``root`` (the caller removes it).
    """
    limits = limits or UnpackLimits()
    stats = stats if stats is not None else UnpackStats()
    deferred = _deferred if _deferred is not None else []
    rootd = RootDir(root, max_symlink_hops=limits.max_symlink_hops)
    applier = _LayerApplier(rootd, layer, stats, deferred, limits)
    try:
        reader = _CountingReader(_open_stream(source, media_type, layer), limits.stream_cap(), layer)
        try:
            with open_tar_stream(reader) as tar:  # type: ignore[arg-type]
                for member in tar_members(tar):
                    applier.apply(member, tar)
            reader.drain()  # the digest covers the whole stream, padding included
        except LAYER_READ_ERRORS as exc:
            raise LayerFormatError(f"layer {layer} is not a readable tar stream: {exc}") from exc
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError | FileExistsError):
                raise UnpackError(f"layer {layer}: cannot apply an entry: {exc}") from exc
            raise LayerFormatError(f"layer {layer} cannot be read: {exc}") from exc
        if diff_id is not None and f"sha256:{reader.hash.hexdigest()}" != diff_id:
            raise LayerFormatError(
                f"layer {layer}: uncompressed content is sha256:{reader.hash.hexdigest()}, the config says {diff_id}"
            )
        if _deferred is None:
            _apply_deferred(rootd, deferred)
    finally:
        rootd.close()
    stats.layers += 1
    return stats


def _apply_deferred(root: RootDir, deferred: list[tuple[list[str], int]]) -> None:
    """Directory modes without owner rwx, applied once nothing more is written below them."""
    for parts, mode in sorted(deferred, key=lambda item: -len(item[0])):
        found = root.walk(parts[:-1], create=False, where="/".join(parts))
        if found is None:
            continue
        try:
            fd = os.open(parts[-1], DIR_FLAGS, dir_fd=found[0])
        except OSError:
            continue  # removed or replaced by a later layer
        finally:
            os.close(found[0])
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def unpack_layers(layers: Sequence[LayerSource], root: Path, *, limits: UnpackLimits | None = None) -> UnpackStats:
    """Apply ``layers`` in order into ``root`` (created 0755 if missing); returns the stats.

    Raises what :func:`apply_layer_stream` raises; the caller removes ``root`` on failure
    (see :func:`remove_tree`).
    """
    limits = limits or UnpackLimits()
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    stats = UnpackStats()
    deferred: list[tuple[list[str], int]] = []
    for source in layers:
        with source.path.open("rb") as fh:
            apply_layer_stream(
                fh, root, media_type=source.media_type, layer=source.name or source.path.name,
                diff_id=source.diff_id, limits=limits, stats=stats, _deferred=deferred,
            )
    rootd = RootDir(root, max_symlink_hops=limits.max_symlink_hops)
    try:
        _apply_deferred(rootd, deferred)
    finally:
        rootd.close()
    return stats


__all__ = [
    "LayerSource",
    "UnpackLimits",
    "UnpackStats",
    "apply_layer_stream",
    "remove_tree",
    "unpack_layers",
]
