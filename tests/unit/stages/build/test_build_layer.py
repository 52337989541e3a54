"""The reproducible layer writer: tar format choices, gzip bytes, digests, streaming."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.layer import (
    Compression,
    EntryType,
    GzipWriter,
    LayerEntry,
    _fast_header,
    gzip_header,
    tar_header,
    write_layer,
)


class _Sink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buf.write(data)


def _gzip(data: bytes, chunk: int, compression: Compression) -> bytes:
    sink = _Sink()
    gz = GzipWriter(sink, compression)
    for i in range(0, len(data), chunk):
        gz.write(data[i : i + chunk])
    assert gz.close() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert gz.size == len(data)
    return sink.buf.getvalue()


def test_gzip_header_is_fixed() -> None:
    # magic, deflate, no flags, mtime 0, XFL (4 = fastest at level 1), OS 255 "unknown"
    assert gzip_header(1) == bytes.fromhex("1f8b08000000000004ff")
    assert gzip_header(6) == bytes.fromhex("1f8b08000000000000ff")
    assert gzip_header(9) == bytes.fromhex("1f8b08000000000002ff")
    out = _gzip(b"x" * 1000, 100, Compression())
    assert out[:10] == bytes.fromhex("1f8b08000000000004ff")


DATA = os.urandom(300_000) + b"abc" * 1_000_000 + bytes(range(256)) * 5000


@pytest.mark.parametrize("library", ["zlib-ng", "zlib"])
def test_gzip_output_is_standard_and_independent_of_threads_and_write_sizes(library: str) -> None:
    small = Compression(block_size=64 * 1024, library=library)
    outs = set()
    for threads in (1, 3):
        for chunk in (4096, 70_001, 1_000_003):
            outs.add(_gzip(DATA, chunk, Compression(block_size=small.block_size, library=library, threads=threads)))
    assert len(outs) == 1, "output depends on threads or write sizes"
    (out,) = outs
    assert gzip.decompress(out) == DATA
    assert zlib.decompress(out, 31) == DATA


def test_gzip_of_nothing() -> None:
    out = _gzip(b"", 1, Compression())
    assert gzip.decompress(out) == b""


def test_compression_settings_change_bytes_but_not_content() -> None:
    a = _gzip(DATA, 65536, Compression(level=1))
    b = _gzip(DATA, 65536, Compression(level=6))
    c = _gzip(DATA, 65536, Compression(library="zlib"))
    assert len({a, b, c}) == 3
    assert gzip.decompress(a) == gzip.decompress(b) == gzip.decompress(c) == DATA


def _tarinfo(e: LayerEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(e.path)
    info.mode, info.uid, info.gid, info.mtime, info.uname, info.gname = e.mode, e.uid, e.gid, e.mtime, "", ""
    info.type = {EntryType.FILE: tarfile.REGTYPE, EntryType.DIR: tarfile.DIRTYPE, EntryType.SYMLINK: tarfile.SYMTYPE}[
        e.type
    ]
    info.size = e.size if e.type is EntryType.FILE else 0
    info.linkname = e.linkname
    return info


@pytest.mark.parametrize(
    "entry",
    [
        LayerEntry("a/b.txt", EntryType.FILE, 0o644, 1000, 1000, 1_700_000_000, 12345),
        LayerEntry("tmp", EntryType.DIR, 0o1777),
        LayerEntry("bin/sh", EntryType.SYMLINK, 0o777, linkname="busybox"),
        LayerEntry("usr/bin/sudo", EntryType.FILE, 0o4755, size=0),
        LayerEntry("x" * 99, EntryType.DIR, 0o755),  # 100 bytes with the '/'
        LayerEntry("x" * 100, EntryType.FILE, 0o644, uid=2**21 - 1, gid=2**21 - 1),
        LayerEntry("big", EntryType.FILE, 0o644, size=8 * 2**30 - 1),
    ],
    ids=lambda e: e.path[:12],
)
def test_fast_header_matches_tarfile(entry: LayerEntry) -> None:
    assert _fast_header(entry, entry.mtime) == _tarinfo(entry).tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


@pytest.mark.parametrize(
    "entry, pax_key",
    [
        (LayerEntry("y" * 101, EntryType.FILE, 0o644), b"path="),
        (LayerEntry("café", EntryType.FILE, 0o644), b"path="),
        (LayerEntry("l", EntryType.SYMLINK, 0o777, linkname="t" * 101), b"linkpath="),
        (LayerEntry("huge", EntryType.FILE, 0o644, size=9 * 2**30), b"size=9663676416"),
        (LayerEntry("u", EntryType.FILE, 0o644, uid=2**21), b"uid=2097152"),
    ],
    ids=["long-path", "non-ascii", "long-link", "over-8GiB", "big-uid"],
)
def test_pax_only_when_needed_and_never_times_or_names(entry: LayerEntry, pax_key: bytes) -> None:
    assert _fast_header(entry, 0) is None
    header = tar_header(entry, 0)
    assert header[156:157] == b"x"  # a PAX extended header first
    assert pax_key in header
    for noise in (b"atime=", b"ctime=", b"mtime=", b"uname=", b"gname=", b"SCHILY.xattr"):
        assert noise not in header


def _entries(tmp_path: Path) -> list[LayerEntry]:
    f = tmp_path / "f"
    f.write_bytes(b"file content\n")
    return [
        LayerEntry("z", EntryType.FILE, 0o644, mtime=2_000_000_000, size=3, data=b"zzz"),
        LayerEntry("a/f", EntryType.FILE, 0o755, mtime=5, size=f.stat().st_size, source=f),
        LayerEntry("a", EntryType.DIR, 0o755, mtime=2_000_000_000),
        LayerEntry("a-b", EntryType.SYMLINK, 0o777, linkname="a/f"),
        LayerEntry("a/c", EntryType.DIR, 0o700, uid=7, gid=8),
    ]


def test_layer_digest_diff_id_order_and_clamp(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path / "l")
    result = write_layer(layout, _entries(tmp_path), source_date_epoch=1_000)
    blob = layout.blob_path(result.descriptor.digest).read_bytes()
    assert result.descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    raw = gzip.decompress(blob)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.uncompressed_size == len(raw)
    assert len(raw) % 512 == 0 and raw.endswith(b"\0" * 1024)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a", "a/c", "a/f", "a-b", "z"]  # component-wise order
        assert [m.mtime for m in members] == [1_000, 0, 5, 0, 1_000]  # clamped to SOURCE_DATE_EPOCH
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert (members[1].uid, members[1].gid, members[1].mode) == (7, 8, 0o700)
        assert tar.extractfile("a/f").read() == b"file content\n"  # type: ignore[union-attr]
        assert members[3].linkname == "a/f"


def test_same_entries_same_blob(tmp_path: Path) -> None:
    a = write_layer(OciLayout.create(tmp_path / "a"), _entries(tmp_path), source_date_epoch=1_000)
    b = write_layer(
        OciLayout.create(tmp_path / "b"), list(reversed(_entries(tmp_path))), source_date_epoch=1_000,
        compression=Compression(threads=1),
    )  # fmt: skip
    assert a.descriptor == b.descriptor and a.diff_id == b.diff_id


def test_duplicate_paths_are_refused(tmp_path: Path) -> None:
    entries = [LayerEntry("a", EntryType.DIR, 0o755), LayerEntry("a", EntryType.DIR, 0o700)]
    with pytest.raises(ValueError, match="given twice"):
        write_layer(OciLayout.create(tmp_path), entries, source_date_epoch=0)


def test_a_file_that_changes_is_refused_and_no_blob_is_left(tmp_path: Path) -> None:
    from ccpipe.stages.build.errors import ContentChanged

    f = tmp_path / "f"
    f.write_bytes(b"12345")
    entry = LayerEntry("f", EntryType.FILE, 0o644, size=3, source=f)
    layout = OciLayout.create(tmp_path / "l")
    with pytest.raises(ContentChanged) as err:
        write_layer(layout, [entry], source_date_epoch=0)
    assert err.value.code == "build.content.changed"
    assert list((tmp_path / "l" / "blobs" / "sha256").iterdir()) == []


_HUGE = """
import resource, sys
from pathlib import Path
from ccpipe.stages.build.layer import EntryType, LayerEntry, write_layer
from ccpipe.oci.layout import OciLayout
src, out = Path(sys.argv[1]), Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = write_layer(OciLayout.create(out), [LayerEntry("huge", EntryType.FILE, 0o644, size=src.stat().st_size, source=src)],
                source_date_epoch=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(r.uncompressed_size, (after - before) // 1024)
"""


def test_huge_file_is_streamed_with_flat_memory(tmp_path: Path) -> None:
    huge = tmp_path / "huge"
    size = 1536 * 2**20
    with huge.open("wb") as f:  # sparse: costs no disk, reads as zeros
        f.truncate(size)
        f.seek(size // 2)
        f.write(b"middle")
    out = subprocess.run(
        [sys.executable, "-c", _HUGE, str(huge), str(tmp_path / "l")], capture_output=True, check=True, text=True,
        cwd=Path(__file__).resolve().parents[4],
    )  # fmt: skip
    uncompressed, grown_mib = map(int, out.stdout.split())
    assert uncompressed == 512 + size + 1024
    assert grown_mib < 64, f"memory grew by {grown_mib} MiB while writing a {size >> 20} MiB file"
