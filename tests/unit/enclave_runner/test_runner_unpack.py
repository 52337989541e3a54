"""Safe layer unpacking: OCI whiteouts, hostile entries refused, limits, nothing outside the root."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccpipe.enclave_runner.errors import LayerFormatError, LayerLimitExceeded, UnpackError, UnsafeLayerEntry
from ccpipe.enclave_runner.rootfs import remove_tree
from ccpipe.enclave_runner.unpack import (
    LayerSource,
    UnpackLimits,
    UnpackStats,
    apply_layer_stream,
    unpack_layers,
)
from tests.malformed_layers import MALFORMED_LAYERS
from tests.unit.enclave_runner.runner_helpers import Entry, snapshot, tar_bytes

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """A root two levels below a sandbox directory that also holds a sentinel 'etc/passwd'."""
    top = tmp_path / "box"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "passwd").write_text("host passwd\n")
    (top / "etc" / "shadow").write_text("host shadow\n")
    root = top / "a" / "root"
    root.mkdir(parents=True)
    return top, root


def apply(root: Path, entries: list[Entry], **kw: object) -> UnpackStats:
    return apply_layer_stream(io.BytesIO(tar_bytes(entries)), root, **kw)  # type: ignore[arg-type]


def outside(top: Path, root: Path) -> dict[str, tuple[str, int, str]]:
    rel = str(root.relative_to(top))
    return {k: v for k, v in snapshot(top).items() if not (k == rel or k.startswith(rel + "/"))}


# --- the normal case -----------------------------------------------------------------------------


def test_runner_unpack_files_dirs_links(box: tuple[Path, Path]) -> None:
    _, root = box
    stats = apply(root, [
        ("dir", "app", 0o755),
        ("file", "app/hello.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("sym", "app/current", "hello.sh"),
        ("link", "app/again.sh", "app/hello.sh"),
        ("file", "./etc/os-release", b"ID=test\n"),
    ])
    assert (root / "app/hello.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((root / "app/hello.sh").stat().st_mode) == 0o755
    assert os.readlink(root / "app/current") == "hello.sh"
    assert (root / "app/again.sh").stat().st_ino == (root / "app/hello.sh").stat().st_ino
    assert (root / "etc/os-release").read_text() == "ID=test\n"
    assert stats.entries == 5 and stats.bytes_written == 18 + 8 and stats.layers == 1


def test_runner_unpack_symlinked_dir_is_resolved_inside_root(box: tuple[Path, Path]) -> None:
    """bin -> usr/bin (merged /usr) then bin/sh: lands in usr/bin/sh, like a container runtime."""
    top, root = box
    before = outside(top, root)
    apply(root, [("dir", "usr/bin"), ("sym", "bin", "usr/bin"), ("sym", "lib", "/usr/lib")])
    apply(root, [("file", "bin/sh", b"sh"), ("file", "lib/libc.so", b"libc")])
    assert (root / "usr/bin/sh").read_bytes() == b"sh"
    assert (root / "usr/lib/libc.so").read_bytes() == b"libc"  # absolute target: relative to the root
    assert os.readlink(root / "bin") == "usr/bin"
    assert outside(top, root) == before


def test_runner_unpack_gzip_and_diff_id(tmp_path: Path) -> None:
    raw = tar_bytes([("file", "a", b"x" * 1000)])
    layer = tmp_path / "layer.tgz"
    layer.write_bytes(gzip.compress(raw))
    good = "sha256:" + hashlib.sha256(raw).hexdigest()
    stats = unpack_layers([LayerSource(layer, GZ, good, "sha256:l1")], tmp_path / "root")
    assert (tmp_path / "root/a").read_bytes() == b"x" * 1000 and stats.layers == 1
    with pytest.raises(LayerFormatError, match="sha256:l1.*the config says sha256:0{64}"):
        unpack_layers([LayerSource(layer, GZ, "sha256:" + "0" * 64, "sha256:l1")], tmp_path / "root2")


def test_runner_unpack_not_a_tar_and_unknown_media_type(tmp_path: Path) -> None:
    with pytest.raises(LayerFormatError, match="not a readable tar"):
        apply_layer_stream(io.BytesIO(b"\x1f\x8bnot gzip at all" * 10), tmp_path, media_type=GZ, layer="L")
    with pytest.raises(LayerFormatError, match="zstd.*not supported") as exc:
        apply_layer_stream(io.BytesIO(b""), tmp_path, media_type="application/vnd.oci.image.layer.v1.tar+zstd")
    assert exc.value.code == "runner.unpack.mediatype"


def test_runner_unpack_later_entry_replaces_earlier(box: tuple[Path, Path]) -> None:
    _, root = box
    apply(root, [("dir", "d"), ("file", "d/x", b"1"), ("file", "f", b"file")])
    apply(root, [("file", "d", b"now a file"), ("dir", "f"), ("file", "f/y", b"2")])
    assert (root / "d").read_bytes() == b"now a file"
    assert (root / "f/y").read_bytes() == b"2"


def test_runner_unpack_regular_file_replaces_symlink_without_writing_through(box: tuple[Path, Path]) -> None:
    _, root = box
    apply(root, [("file", "etc/shadow", b"image shadow"), ("sym", "etc/passwd", "shadow")])
    apply(root, [("file", "etc/passwd", b"new passwd")])
    assert not (root / "etc/passwd").is_symlink()
    assert (root / "etc/passwd").read_bytes() == b"new passwd"
    assert (root / "etc/shadow").read_bytes() == b"image shadow"


def test_runner_unpack_read_only_directory_mode_applied_last(tmp_path: Path) -> None:
    layer = tmp_path / "l.tar"
    layer.write_bytes(tar_bytes([("dir", "ro", 0o555), ("file", "ro/inside", b"ok"), ("dir", "tmp", 0o1777)]))
    root = tmp_path / "root"
    unpack_layers([LayerSource(layer, "application/vnd.oci.image.layer.v1.tar")], root)
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "ro/inside").read_bytes() == b"ok"
    remove_tree(root)
    assert not root.exists()


# --- whiteouts ------------------------------------------------------------------------------------


def test_runner_unpack_whiteout_removes_lower_file_and_dir(box: tuple[Path, Path]) -> None:
    _, root = box
    apply(root, [("file", "a/keep", b"k"), ("file", "a/gone", b"g"), ("file", "b/deep/x", b"x")])
    stats = apply(root, [("file", "a/.wh.gone", b""), ("file", ".wh.b", b"")])
    assert (root / "a/keep").exists()
    assert not (root / "a/gone").exists() and not (root / "b").exists()
    assert not (root / "a/.wh.gone").exists() and not (root / ".wh.b").exists()
    assert stats.whiteouts == 2


def test_runner_unpack_whiteout_never_hides_same_layer_entry(box: tuple[Path, Path]) -> None:
    """OCI: a whiteout applies to lower layers only, whatever the order inside the layer."""
    _, root = box
    apply(root, [("file", "x", b"lower")])
    apply(root, [("file", "x", b"same layer"), ("file", ".wh.x", b"")])
    assert (root / "x").read_bytes() == b"same layer"
    apply(root, [("file", ".wh.x", b""), ("file", "x", b"third")])
    assert (root / "x").read_bytes() == b"third"


@pytest.mark.parametrize("marker_first", [True, False])
def test_runner_unpack_opaque_dir_hides_lower_children_only(box: tuple[Path, Path], marker_first: bool) -> None:
    _, root = box
    apply(root, [("file", "d/old", b"o"), ("file", "d/sub/older", b"o"), ("file", "e/untouched", b"u")])
    marker: Entry = ("file", "d/.wh..wh..opq", b"")
    new: list[Entry] = [("dir", "d/sub"), ("file", "d/sub/new", b"n"), ("file", "d/fresh", b"f")]
    apply(root, [marker, *new] if marker_first else [*new, marker])
    assert sorted(p.name for p in (root / "d").iterdir()) == ["fresh", "sub"]
    assert sorted(p.name for p in (root / "d/sub").iterdir()) == ["new"]
    assert (root / "e/untouched").exists()
    assert not (root / "d/.wh..wh..opq").exists()


@pytest.mark.parametrize("name", [".wh..", ".wh.", "d/.wh...", "d/.wh..wh.x"])
def test_runner_unpack_whiteout_of_nothing_refused(box: tuple[Path, Path], name: str) -> None:
    _, root = box
    with pytest.raises(UnsafeLayerEntry, match="whiteout"):
        apply(root, [("file", name, b"")])


def test_runner_unpack_whiteout_through_escaping_symlink_refused(box: tuple[Path, Path]) -> None:
    top, root = box
    os.symlink("../../etc", root / "planted")  # as if left by something else: never followed out
    with pytest.raises(UnsafeLayerEntry, match="outside the root"):
        apply(root, [("file", "planted/.wh.passwd", b"")])
    assert (top / "etc/passwd").read_text() == "host passwd\n"


# --- hostile entries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [("../../etc/passwd", "contains '..'"), ("/etc/passwd", "absolute path"), ("a/../../x", "contains '..'")],
)
def test_runner_unpack_path_traversal_refused(box: tuple[Path, Path], name: str, why: str) -> None:
    top, root = box
    before = snapshot(top)
    with pytest.raises(UnsafeLayerEntry, match=why) as exc:
        apply(root, [("file", name, b"root::0:0::/root:/bin/sh\n")], layer="sha256:bad")
    assert repr(name) in exc.value.message and "sha256:bad" in exc.value.message
    assert snapshot(top) == before


@pytest.mark.parametrize("target", ["../../../etc", "../..", "a/../../.."])
def test_runner_unpack_escaping_symlink_refused_before_write_through(box: tuple[Path, Path], target: str) -> None:
    top, root = box
    before = snapshot(top)
    with pytest.raises(UnsafeLayerEntry, match="points outside the root"):
        apply(root, [("sym", "evil", target), ("file", "evil/passwd", b"pwned")])
    assert snapshot(top) == before


def test_runner_unpack_nested_symlink_escape_refused(box: tuple[Path, Path]) -> None:
    """A link that looks harmless lexically but escapes through another link is refused on use."""
    top, root = box
    before = outside(top, root)
    apply(root, [("dir", "d/e"), ("sym", "d/e/up", "../.."), ("sym", "up2", "d/e/up")])
    with pytest.raises(UnsafeLayerEntry, match="contains '..'"):
        apply(root, [("file", "up2/../etc/passwd", b"pwned")])  # '..' refused by name
    with pytest.raises(UnsafeLayerEntry, match="outside the root"):
        apply(root, [("sym", "d/e/up/esc", "../etc")])
    os.symlink("../../..", root / "d" / "e" / "deep")  # planted: resolution steps above the root
    with pytest.raises(UnsafeLayerEntry, match="outside the root"):
        apply(root, [("file", "d/e/deep/etc/passwd", b"pwned")])
    assert outside(top, root) == before


def test_runner_unpack_symlink_loop_refused(box: tuple[Path, Path]) -> None:
    _, root = box
    apply(root, [("sym", "a", "b"), ("sym", "b", "a")])
    with pytest.raises(UnsafeLayerEntry, match="too many levels"):
        apply(root, [("file", "a/x", b"")])


@pytest.mark.parametrize(
    ("target", "why"),
    [("/etc/shadow", "absolute path"), ("../../etc/shadow", "contains '..'"),
     ("etc/shadow", "not in the image"), ("dir", "directory")],
)
def test_runner_unpack_hardlink_outside_or_missing_refused(box: tuple[Path, Path], target: str, why: str) -> None:
    top, root = box
    apply(root, [("dir", "dir")])
    before = snapshot(top)
    shadow_links = (top / "etc/shadow").stat().st_nlink
    with pytest.raises(UnsafeLayerEntry, match=why):
        apply(root, [("link", "stolen", target)])
    assert (top / "etc/shadow").stat().st_nlink == shadow_links
    assert snapshot(top) == before


def test_runner_unpack_hardlink_through_escaping_symlink_refused(box: tuple[Path, Path]) -> None:
    top, root = box
    os.symlink("../../etc", root / "hostetc")
    with pytest.raises(UnsafeLayerEntry, match="outside the root"):
        apply(root, [("link", "stolen", "hostetc/shadow")])
    assert (top / "etc/shadow").stat().st_nlink == 1 and not (root / "stolen").exists()


@pytest.mark.parametrize(("kind", "what"), [("chr", "character device"), ("blk", "block device"), ("fifo", "fifo")])
def test_runner_unpack_device_nodes_refused(box: tuple[Path, Path], kind: str, what: str) -> None:
    _, root = box
    with pytest.raises(UnsafeLayerEntry, match=what) as exc:
        apply(root, [("file", "ok", b"1"), (kind, "dev/null")])
    assert "'dev/null'" in exc.value.message
    assert not (root / "dev/null").exists()


def test_runner_unpack_setuid_setgid_stripped(box: tuple[Path, Path]) -> None:
    _, root = box
    stats = apply(root, [("file", "bin/su", b"su", 0o4755), ("file", "bin/wall", b"w", 0o2755), ("dir", "t", 0o3777)])
    assert stat.S_IMODE((root / "bin/su").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "bin/wall").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "t").stat().st_mode) == 0o1777  # sticky kept on a directory
    assert stats.stripped_modes == 3 and "layer:bin/su" in stats.stripped_examples


# --- limits ---------------------------------------------------------------------------------------


def test_runner_unpack_entry_bomb_over_limit(box: tuple[Path, Path]) -> None:
    _, root = box
    bomb: list[Entry] = [("file", f"f{i:05d}", b"") for i in range(10_000)]
    with pytest.raises(LayerLimitExceeded, match="more than 5000 entries.*'f05000'"):
        apply(root, bomb, limits=UnpackLimits(max_entries=5000))
    assert len(list(root.iterdir())) == 5000


def test_runner_unpack_limits_span_layers(box: tuple[Path, Path]) -> None:
    _, root = box
    limits = UnpackLimits(max_entries=10)
    stats = apply(root, [("file", f"a{i}", b"") for i in range(6)], limits=limits)
    with pytest.raises(LayerLimitExceeded, match="more than 10 entries"):
        apply(root, [("file", f"b{i}", b"") for i in range(6)], limits=limits, stats=stats)


def test_runner_unpack_byte_limits(box: tuple[Path, Path]) -> None:
    _, root = box
    with pytest.raises(LayerLimitExceeded, match="'big' is 2000 bytes; one file may hold 1000"):
        apply(root, [("file", "big", b"x" * 2000)], limits=UnpackLimits(max_file_bytes=1000))
    assert not (root / "big").exists()
    with pytest.raises(LayerLimitExceeded, match="'c'.*exceed 1500 bytes"):
        apply(root, [("file", "a", b"x" * 700), ("file", "b", b"x" * 700), ("file", "c", b"x" * 700)],
              limits=UnpackLimits(max_total_bytes=1500))


def test_runner_unpack_gzip_bomb_stops_at_stream_cap(tmp_path: Path) -> None:
    # 64 MiB of zeros after one tiny entry: tar reads them as padding, the cap stops it early
    raw = tar_bytes([("file", "a", b"1")]) + b"\0" * (64 << 20)
    bomb = gzip.compress(raw, compresslevel=1)
    limits = UnpackLimits(max_total_bytes=1 << 20, max_entries=10)
    with pytest.raises(LayerLimitExceeded, match="decompression bomb"):
        apply_layer_stream(io.BytesIO(bomb), tmp_path, media_type=GZ, limits=limits)


# --- property: whatever the entries, nothing lands outside the root --------------------------------

# a small alphabet so that entries collide: a link made by one entry is written through by another
_COMPONENTS = st.sampled_from(["a", "lnk", "etc", "passwd", "..", ".", ".wh.a", ".wh..wh..opq"])
_PATHS = st.lists(_COMPONENTS, min_size=1, max_size=3).map("/".join)
_TARGETS = st.one_of(
    st.sampled_from(["../../etc", "../..", "..", "/", "/etc", "a/../..", "lnk", "../lnk", "etc"]),
    _PATHS, _PATHS.map(lambda p: "/" + p),
)
_ENTRY = st.one_of(
    st.tuples(st.just("file"), _PATHS, st.just(b"pwned")),
    st.tuples(st.just("dir"), _PATHS),
    st.tuples(st.just("sym"), _PATHS, _TARGETS),
    st.tuples(st.just("link"), _PATHS, _PATHS),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(st.lists(_ENTRY, min_size=1, max_size=6), min_size=1, max_size=3))
def test_runner_unpack_never_writes_outside_root(tmp_path: Path, layers: list[list[Entry]]) -> None:
    top = tmp_path / f"p{os.urandom(4).hex()}"
    (top / "etc").mkdir(parents=True)
    (top / "etc/passwd").write_text("host")
    root = top / "x" / "root"
    root.mkdir(parents=True)
    before = outside(top, root)
    stats = UnpackStats()
    for entries in layers:
        try:
            apply(root, entries, stats=stats)
        except UnpackError:
            break
    assert outside(top, root) == before
    assert (top / "etc/passwd").stat().st_nlink == 1
    remove_tree(top)


def test_runner_unpack_long_and_unicode_names(box: tuple[Path, Path]) -> None:
    _, root = box
    deep = "/".join(["d" * 60] * 4) + "/f"  # > 100 bytes: a PAX path header
    apply(root, [("file", deep, b"deep"), ("file", "grüße/日本.txt", b"u"), ("dir", "./", 0o755)])
    assert (root / deep).read_bytes() == b"deep"
    assert (root / "grüße" / "日本.txt").read_bytes() == b"u"


def test_runner_unpack_hardlink_to_symlink_links_the_link(box: tuple[Path, Path]) -> None:
    top, root = box
    apply(root, [("sym", "l", "/etc/passwd"), ("link", "l2", "l")])
    assert os.readlink(root / "l2") == "/etc/passwd"  # the link itself, not the host file it names
    assert (top / "etc/passwd").stat().st_nlink == 1


def test_runner_unpack_whiteout_through_in_root_symlink(box: tuple[Path, Path]) -> None:
    _, root = box
    apply(root, [("file", "usr/lib/x", b"x"), ("file", "usr/lib/y", b"y"), ("sym", "lib", "usr/lib")])
    apply(root, [("file", "lib/.wh.x", b"")])
    assert not (root / "usr/lib/x").exists() and (root / "usr/lib/y").exists()
    assert os.readlink(root / "lib") == "usr/lib"


@pytest.mark.parametrize("name", sorted(MALFORMED_LAYERS))
def test_runner_unpack_malformed_layer_is_a_format_error(tmp_path: Path, name: str) -> None:
    data, media_type = MALFORMED_LAYERS[name]
    with pytest.raises(LayerFormatError, match="is not a readable tar stream"):
        apply_layer_stream(io.BytesIO(data), tmp_path, media_type=media_type, layer=name)
