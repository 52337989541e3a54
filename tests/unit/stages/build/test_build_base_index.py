"""The base's file-system index: whiteouts, and the per-manifest cache that spares a second decompression."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from ccpipe.oci.documents import Descriptor
from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base import load
from ccpipe.stages.build.base.fs_index import BaseFilesystem, BaseIndexCache, index_layer
from ccpipe.stages.build.base.resolve import BaseSources, resolve_base
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseImageError
from tests.malformed_layers import MALFORMED_LAYERS


def test_whiteouts_in_base_layers(tmp_path: Path) -> None:
    fs = BaseFilesystem()

    def ti(name: str, kind: bytes = tarfile.DIRTYPE, link: str = "") -> tarfile.TarInfo:
        t = tarfile.TarInfo(name)
        t.type, t.linkname = kind, link
        return t

    fs.apply(
        [
            ti("a"),
            ti("a/b"),
            ti("a/b/c", tarfile.REGTYPE),
            ti("d"),
            ti("d/e", tarfile.REGTYPE),
            ti("l", tarfile.SYMTYPE, "/a"),
        ]
    )
    fs.apply([ti("a/.wh.b", tarfile.REGTYPE), ti("d/.wh..wh..opq", tarfile.REGTYPE)])
    assert fs.lookup(["a"]) == "dir" and fs.lookup(["a", "b"]) is None and fs.lookup(["a", "b", "c"]) is None
    assert fs.lookup(["d"]) == "dir" and fs.lookup(["d", "e"]) is None
    assert fs.lookup(["l"]) == "symlink" and fs.lookup(["l"], follow_last=True) == "dir"


def _fs_with(*names: str) -> BaseFilesystem:
    fs = BaseFilesystem()
    fs.apply([tarfile.TarInfo(name) for name in names])
    return fs


def test_index_cache_is_bounded_and_hands_out_copies() -> None:
    cache = BaseIndexCache(max_bases=2)
    cache.put("sha256:a", _fs_with("a"))
    cache.put("sha256:b", _fs_with("b"))
    assert cache.get("sha256:a") is not None  # a is now the most recently used
    cache.put("sha256:c", _fs_with("c"))
    assert len(cache) == 2 and cache.get("sha256:b") is None
    mine = cache.get("sha256:a")
    assert mine is not None and mine.lookup(["a"]) == "file"
    mine.apply([tarfile.TarInfo(".wh.a")])
    again = cache.get("sha256:a")
    assert mine.lookup(["a"]) is None and again is not None and again.lookup(["a"]) == "file"
    with pytest.raises(ValueError):
        BaseIndexCache(max_bases=0)


@pytest.fixture
def counted_index_layer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The layer digests the loader decompresses, in order."""
    seen: list[str] = []
    real = index_layer  # the function load.py calls, before the patch below replaces it there

    def counting(layout: OciLayout, desc: Descriptor, fs: BaseFilesystem) -> str:
        seen.append(desc.digest)
        return real(layout, desc, fs)

    monkeypatch.setattr(load, "index_layer", counting)
    return seen


def test_second_build_on_a_base_does_not_decompress_it(
    tmp_path: Path, busybox_layout: Path, counted_index_layer: list[str]
) -> None:
    reference = f"oci:{busybox_layout}:busybox"
    sources = BaseSources(oci_roots=(busybox_layout,), index_cache=BaseIndexCache())
    first = resolve_base(reference, OciLayout.create(tmp_path / "one"), context=None, sources=sources)
    assert counted_index_layer == [d.digest for d in first.layers]
    out = OciLayout.create(tmp_path / "two")
    second = resolve_base(reference, out, context=None, sources=sources)
    assert counted_index_layer == [d.digest for d in first.layers]  # no second decompression
    assert second.fs.nodes == first.fs.nodes and second.fs is not first.fs
    assert second.diff_ids == first.diff_ids and all(out.has_blob(d.digest) for d in second.layers)
    resolve_base(reference, OciLayout.create(tmp_path / "three"), context=None,
                 sources=BaseSources(oci_roots=(busybox_layout,)))  # fmt: skip
    assert len(counted_index_layer) == 2 * len(first.layers)  # without a cache, every build decompresses


def test_a_cached_base_still_has_its_layers_checked(tmp_path: Path, busybox_layout: Path) -> None:
    bases = tmp_path / "bases"
    src = OciLayout.open_or_create(bases / "bb")
    original = OciLayout.open(busybox_layout)
    top = original.resolve("busybox")
    manifest = original.read_manifest(top)
    for desc in (top, manifest.config, *manifest.layers):
        src.copy_blob_from(original, desc)
    src.tag(top, "busybox")
    sources = BaseSources(oci_roots=(bases,), index_cache=BaseIndexCache())
    resolve_base(f"oci:{bases}/bb:busybox", OciLayout.create(tmp_path / "one"), context=None, sources=sources)
    layer = src.blob_path(manifest.layers[0].digest)
    data = bytearray(layer.read_bytes())
    data[-1] ^= 1
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    with pytest.raises(BaseDigestMismatch):
        resolve_base(f"oci:{bases}/bb:busybox", OciLayout.create(tmp_path / "two"), context=None, sources=sources)


def test_a_base_that_fails_its_check_is_not_cached(tmp_path: Path, busybox_layout: Path) -> None:
    cache = BaseIndexCache()
    original = OciLayout.open(busybox_layout)
    manifest = original.read_manifest(original.resolve("busybox"))
    config = original.read_json(manifest.config)
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    bad = OciLayout.open_or_create(tmp_path / "bases" / "bad")
    for desc in manifest.layers:
        bad.copy_blob_from(original, desc)
    bad.write_image(config, list(manifest.layers), tag="bad")
    sources = BaseSources(oci_roots=(tmp_path / "bases",), index_cache=cache)
    for attempt in range(2):
        with pytest.raises(BaseDigestMismatch, match="the config says"):
            resolve_base(f"oci:{tmp_path}/bases/bad:bad", OciLayout.create(tmp_path / f"o{attempt}"), context=None,
                         sources=sources)  # fmt: skip
    assert len(cache) == 0


@pytest.mark.parametrize("name", sorted(MALFORMED_LAYERS))
def test_a_malformed_base_layer_is_a_base_image_error(tmp_path: Path, name: str) -> None:
    data, media_type = MALFORMED_LAYERS[name]
    layout = OciLayout.create(tmp_path / "layout")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    desc = layout.add_blob([data], Descriptor(media_type=media_type, digest=digest, size=len(data)))
    with pytest.raises(BaseImageError, match="is not a readable tar"):
        index_layer(layout, desc, BaseFilesystem())
