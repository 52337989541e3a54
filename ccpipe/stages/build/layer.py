"""Reproducible layers: a tar stream and a gzip writer whose bytes depend only on their input.

Tar (decided once, here):

* entries sorted by path, compared component by component (a directory's subtree follows it);
* POSIX.1-2001 (PAX) format through :meth:`tarfile.TarInfo.tobuf`: a plain USTAR header when
  the entry fits, a PAX extended header only for what does not fit (path over 100 bytes,
  non-ASCII names, size of 8 GiB and more, ids of 2^21 and more). Never atime, ctime,
  xattrs, uname or gname: those are not in :class:`LayerEntry` at all;
* numeric ids with empty user and group names; modes as the caller normalised them;
* mtime clamped to ``source_date_epoch`` (``min(mtime, SDE)``);
* end of archive = two zero blocks, no padding to a 10 KiB record (as Go's archive/tar).

Gzip (RFC 1952), fixed: header ``1f 8b 08 00 00000000 XFL ff`` (no name, mtime 0, OS 255
"unknown", XFL 4/2/0 for level 1/9/other), then one raw deflate stream cut into fixed
``block_size`` blocks of *uncompressed* input. Each block is deflated on its own with the 32 KiB
before it as preset dictionary and ends in a sync flush, the last in a final block (as pigz
does). The output is therefore the same whatever the number of threads and however the input
was split into writes; it depends only on the bytes, the level, the block size and the deflate
library (pinned in the lock file). Threads compress blocks in parallel; the calling thread
reads files, hashes the uncompressed stream (diff_id, CRC-32) and writes compressed blocks out
in order, so memory stays at a few blocks whatever the layer size.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import hashlib
import itertools
import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zlib_ng import zlib_ng

from ccpipe.oci.documents import MEDIA_TYPE_LAYER_GZIP, Descriptor
from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.errors import ContentChanged, UnsupportedName

_TAR_BLOCK = 512
_READ_CHUNK = 1 << 20


class EntryType(enum.Enum):
    """Kinds of layer entries the builder writes."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One entry of a layer.

    ``path`` is relative to the image root, '/'-separated, without leading '/', trailing '/',
    '.' or '..' components. A file's content comes from ``source`` (a file on disk, read without
    following a final symlink, ``size`` bytes) or from ``data``.
    """

    path: str
    type: EntryType
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    source: Path | None = None
    data: bytes | None = None
    linkname: str = ""

    def sort_key(self) -> tuple[str, ...]:
        """Component-wise path order."""
        return tuple(self.path.split("/"))


@dataclass(frozen=True, slots=True)
class Compression:
    """How layers are compressed; every field but ``threads`` changes the output bytes."""

    level: int = 1
    block_size: int = 1 << 20
    threads: int = 0
    """Compression threads; 0 = one per CPU. Does not change the output."""
    library: str = "zlib-ng"
    """``zlib-ng`` (default, fast) or ``zlib`` (CPython's, for comparison)."""

    def describe(self) -> str:
        """One line for provenance and logs, e.g. ``gzip zlib-ng 2.3.3 level 1 block 1048576``."""
        return f"gzip {self.library} {_library_version(self.library)} level {self.level} block {self.block_size}"


DEFAULT_COMPRESSION = Compression()
"""zlib-ng level 1 (deflate_quick) in 1 MiB blocks: about 3 times umoci's speed (bench/build_layer.py)."""


def _deflate_module(library: str) -> Any:
    if library == "zlib-ng":
        return zlib_ng
    if library == "zlib":
        return zlib
    raise ValueError(f"unknown deflate library {library!r} (known: zlib-ng, zlib)")


def _library_version(library: str) -> str:
    mod = _deflate_module(library)
    return str(getattr(mod, "ZLIBNG_VERSION", None) or getattr(mod, "ZLIB_RUNTIME_VERSION", "?"))


class Sink(Protocol):
    """Where compressed bytes go (a :class:`ccpipe.oci.layout.BlobWriter`, a file)."""

    def write(self, data: bytes, /) -> Any: ...


def gzip_header(level: int) -> bytes:
    """The 10-byte gzip header every ccpipe layer starts with."""
    xfl = 4 if level == 1 else 2 if level == 9 else 0
    return struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, xfl, 0xFF)


def _deflate_block(mod: Any, level: int, block: bytes, zdict: bytes, last: bool) -> bytes:
    if zdict:
        c = mod.compressobj(level, mod.DEFLATED, -15, 8, mod.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = mod.compressobj(level, mod.DEFLATED, -15, 8, mod.Z_DEFAULT_STRATEGY)
    out: bytes = c.compress(block) + c.flush(mod.Z_FINISH if last else mod.Z_SYNC_FLUSH)
    return out


class GzipWriter:
    """Deterministic, parallel gzip of a byte stream into ``sink``; hashes the input on the way.

    After :meth:`close`, ``diff_id`` is ``sha256:<hex>`` of everything written and ``size`` its
    length. The compressed digest is the sink's business (a ``BlobWriter`` hashes as it writes).
    """

    def __init__(self, sink: Sink, compression: Compression = DEFAULT_COMPRESSION) -> None:
        self._sink = sink
        self._c = compression
        self._mod = _deflate_module(compression.library)
        self._buf = bytearray()
        self._prev_tail = b""
        self._sha = hashlib.sha256()
        self._crc = 0
        self.size = 0
        self.diff_id = ""
        threads = compression.threads or os.cpu_count() or 1
        self._pool = cf.ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        # The uncompressed stream is hashed in order on a thread of its own (hashlib releases
        # the GIL), so the calling thread only reads files and writes tar headers.
        self._hasher = cf.ThreadPoolExecutor(max_workers=1) if threads > 1 else None
        self._hashing: deque[cf.Future[None]] = deque()
        self._pending: deque[cf.Future[bytes]] = deque()
        self._max_pending = 2 * threads
        self._closed = False
        sink.write(gzip_header(compression.level))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes to the stream."""
        self._buf += data
        bs = self._c.block_size
        if len(self._buf) >= bs:
            while len(self._buf) >= bs:
                block = bytes(self._buf[:bs])
                del self._buf[:bs]
                self._submit(block, last=False)

    def _submit(self, block: bytes, *, last: bool) -> None:
        if self._hasher is None:
            self._sha.update(block)
        else:
            self._hashing.append(self._hasher.submit(self._sha.update, block))
            while len(self._hashing) > self._max_pending:
                self._hashing.popleft().result()
        self._crc = zlib_ng.crc32(block, self._crc)
        self.size += len(block)
        zdict, self._prev_tail = self._prev_tail, block[-32768:]
        if self._pool is None:
            self._sink.write(_deflate_block(self._mod, self._c.level, block, zdict, last))
            return
        self._pending.append(self._pool.submit(_deflate_block, self._mod, self._c.level, block, zdict, last))
        while len(self._pending) > self._max_pending or (last and self._pending):
            self._sink.write(self._pending.popleft().result())

    def close(self) -> str:
        """Finish the stream (final block and trailer); returns the diff_id."""
        if self._closed:
            return self.diff_id
        try:
            self._submit(bytes(self._buf), last=True)
            self._buf.clear()
            self._sink.write(struct.pack("<II", self._crc, self.size & 0xFFFFFFFF))
            while self._hashing:
                self._hashing.popleft().result()
        finally:
            self._shutdown()
        self.diff_id = "sha256:" + self._sha.hexdigest()
        return self.diff_id

    def abort(self) -> None:
        """Stop without finishing (after an error)."""
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        for pool in (self._pool, self._hasher):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


_TYPEFLAG = {EntryType.FILE: b"0", EntryType.DIR: b"5", EntryType.SYMLINK: b"2"}
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


def _octal(value: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, value)


def _fast_header(entry: LayerEntry, mtime: int) -> bytes | None:
    """The USTAR header tarfile's PAX_FORMAT writes for an entry that needs no PAX record.

    ``None`` when the entry does not fit plain USTAR (then tarfile builds the PAX header).
    ``tests/unit/stages/build/test_layer.py`` checks this against ``TarInfo.tobuf``.
    """
    name = entry.path + "/" if entry.type is EntryType.DIR else entry.path
    if not (name.isascii() and entry.linkname.isascii()):
        return None
    bname, blink = name.encode("ascii"), entry.linkname.encode("ascii")
    size = entry.size if entry.type is EntryType.FILE else 0
    if (
        len(bname) > 100 or len(blink) > 100 or not 0 <= entry.uid < 8**7 or not 0 <= entry.gid < 8**7
        or size >= 8**11 or not 0 <= mtime < 8**11
    ):  # fmt: skip
        return None
    fields = [
        bname, _octal(entry.mode & 0o7777, 8), _octal(entry.uid, 8), _octal(entry.gid, 8),
        _octal(size, 12), _octal(mtime, 12), b"        ", _TYPEFLAG[entry.type], blink,
        b"ustar\x0000", b"", b"", b"", b"", b"",
    ]  # fmt: skip
    buf = _USTAR.pack(*fields)
    chksum = sum(buf)
    return buf[:148] + b"%06o\0 " % chksum + buf[156:]


def tar_header(entry: LayerEntry, mtime: int) -> bytes:
    """The header block(s) of one entry (see the module docstring for the format choices)."""
    fast = _fast_header(entry, mtime)
    if fast is not None:
        return fast
    try:
        entry.path.encode("utf-8")
        entry.linkname.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsupportedName(f"{entry.path!r} (or its link target) is not valid UTF-8") from None
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode & 0o7777
    info.uid = entry.uid
    info.gid = entry.gid
    info.uname = ""
    info.gname = ""
    info.mtime = mtime
    if entry.type is EntryType.FILE:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    elif entry.type is EntryType.DIR:
        info.type = tarfile.DIRTYPE
    else:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.linkname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _copy_file(entry: LayerEntry, out: GzipWriter) -> None:
    assert entry.source is not None
    try:
        fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ContentChanged(f"{entry.source} cannot be read any more: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            raise ContentChanged(f"{entry.source} changed while the layer was being written")
        remaining = entry.size
        while remaining:
            chunk = os.read(fd, min(_READ_CHUNK, remaining))
            if not chunk:
                raise ContentChanged(f"{entry.source} shrank while the layer was being written")
            out.write(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class LayerResult:
    """A layer written to a layout."""

    descriptor: Descriptor
    """The compressed blob (media type, digest, size)."""
    diff_id: str
    """sha256 of the uncompressed tar."""
    uncompressed_size: int
    entries: int


def sorted_entries(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """Entries in layer order; raises ``ValueError`` on a path given twice."""
    ordered = sorted(entries, key=LayerEntry.sort_key)
    for a, b in itertools.pairwise(ordered):
        if a.path == b.path:
            raise ValueError(f"layer path {a.path!r} given twice")
    return ordered


def write_tar(entries: Iterable[LayerEntry], out: GzipWriter, *, source_date_epoch: int | None) -> int:
    """Write the tar stream of ``entries`` (sorted here) into ``out``; returns the entry count."""
    count = 0
    for entry in sorted_entries(entries):
        mtime = entry.mtime if source_date_epoch is None else min(entry.mtime, source_date_epoch)
        out.write(tar_header(entry, max(mtime, 0)))
        if entry.type is EntryType.FILE:
            if entry.data is not None:
                if len(entry.data) != entry.size:
                    raise ValueError(f"{entry.path}: size {entry.size} but {len(entry.data)} bytes of data")
                out.write(entry.data)
            else:
                _copy_file(entry, out)
            pad = -entry.size % _TAR_BLOCK
            if pad:
                out.write(b"\0" * pad)
        count += 1
    out.write(b"\0" * (2 * _TAR_BLOCK))
    return count


def write_layer(
    layout: OciLayout,
    entries: Iterable[LayerEntry],
    *,
    source_date_epoch: int | None,
    compression: Compression = DEFAULT_COMPRESSION,
    media_type: str = MEDIA_TYPE_LAYER_GZIP,
) -> LayerResult:
    """Write one gzip layer blob into ``layout`` in a single streaming pass.

    The compressed digest (by the blob writer) and the diff_id (by the gzip writer) are both
    computed as the bytes go by; nothing is held in memory but a few compression blocks.
    """
    with layout.blob_writer(media_type) as blob:
        gz = GzipWriter(blob, compression)
        try:
            count = write_tar(entries, gz, source_date_epoch=source_date_epoch)
            diff_id = gz.close()
        except BaseException:
            gz.abort()
            raise
        desc = blob.commit()
    return LayerResult(descriptor=desc, diff_id=diff_id, uncompressed_size=gz.size, entries=count)


def gzip_tar_stream(
    layout: OciLayout,
    chunks: Iterable[bytes],
    *,
    compression: Compression = DEFAULT_COMPRESSION,
    media_type: str = MEDIA_TYPE_LAYER_GZIP,
) -> LayerResult:
    """Compress an existing uncompressed tar (given as chunks) into a layer blob."""
    with layout.blob_writer(media_type) as blob:
        gz = GzipWriter(blob, compression)
        try:
            for chunk in chunks:
                gz.write(chunk)
            diff_id = gz.close()
        except BaseException:
            gz.abort()
            raise
        desc = blob.commit()
    return LayerResult(descriptor=desc, diff_id=diff_id, uncompressed_size=gz.size, entries=0)
