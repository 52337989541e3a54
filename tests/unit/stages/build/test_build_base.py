"""Base images: busybox made here, imports of layouts and archives, registry bases by digest."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from build_helpers import layer_members

from ccpipe.oci.documents import MEDIA_TYPE_INDEX, Descriptor, ImageIndex, Platform
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.errors import TransientError
from ccpipe.stages.build.base import BaseFilesystem, BaseSources, import_base, make_busybox_base, resolve_base
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseImageError, BaseNotFound, BaseUnsupported
from ccpipe.stages.build.layer import EntryType, LayerEntry, write_layer


def test_busybox_base_is_deterministic_and_runs(tmp_path: Path, busybox_layout: Path) -> None:
    again = make_busybox_base(tmp_path / "again")
    assert again.digest == OciLayout.open(busybox_layout).resolve("busybox").digest
    layout = OciLayout.open(busybox_layout)
    manifest = layout.read_manifest(layout.resolve("busybox"))
    m = layer_members(layout.blob_path(manifest.layers[0].digest))
    assert m["bin/busybox"].mode == 0o755 and m["bin/busybox"].isreg()
    for applet in ("sh", "echo", "cat", "ls"):
        assert m[f"bin/{applet}"].issym() and m[f"bin/{applet}"].linkname == "busybox"
    assert m["tmp"].mode == 0o1777 and m["root"].mode == 0o700
    assert {x.mtime for x in m.values()} == {0}
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{busybox_layout}:busybox", str(bundle)], check=True)
    out = subprocess.run([bundle / "rootfs/bin/sh", "-c", "echo hi from busybox"], capture_output=True, check=True)
    assert out.stdout == b"hi from busybox\n"


def test_missing_busybox(tmp_path: Path) -> None:
    with pytest.raises(BaseNotFound, match="nope does not exist") as err:
        make_busybox_base(tmp_path / "l", busybox=tmp_path / "nope")
    assert "busybox-static" in err.value.hint


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_import_archives(tmp_path: Path, busybox_layout: Path, transport: str) -> None:
    archive = tmp_path / f"bb-{transport}.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{busybox_layout}:busybox", f"{transport}:{archive}"], check=True,
        capture_output=True,
    )  # fmt: skip
    desc = import_base(archive, tmp_path / "imported", tag="bb")
    layout = OciLayout.open(tmp_path / "imported")
    original = OciLayout.open(busybox_layout)
    diff_ids = layout.read_json(layout.read_manifest(desc).config)["rootfs"]["diff_ids"]
    assert (
        diff_ids == original.read_json(original.read_manifest(original.resolve("busybox")).config)["rootfs"]["diff_ids"]
    )
    inspected = json.loads(subprocess.check_output(["skopeo", "inspect", f"oci:{tmp_path / 'imported'}:bb"]))
    assert inspected["Digest"] == desc.digest
    base = resolve_base(
        f"oci:{tmp_path / 'imported'}:bb", OciLayout.create(tmp_path / "out"), context=None,
        sources=BaseSources(oci_roots=(tmp_path,)),
    )  # fmt: skip
    assert base.fs.lookup(["bin", "sh"]) == "symlink"
    assert base.fs.lookup(["bin", "sh"], follow_last=True) == "file"


def test_import_layout_keeps_the_digest(tmp_path: Path, busybox_layout: Path) -> None:
    desc = import_base(busybox_layout, tmp_path / "copy", tag="x", source_tag="busybox")
    assert desc.digest == OciLayout.open(busybox_layout).resolve("busybox").digest


def test_import_refuses_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BaseImageError):
        import_base(junk, tmp_path / "l", tag="x")


class FakeRegistry:
    """Serves one layout's blobs by digest, as a registry client would, and counts calls."""

    def __init__(self, layout: Path, tamper: str | None = None) -> None:
        self.layout = OciLayout.open(layout)
        self.tamper = tamper
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(self, repository: str, digest: str, /, *, manifest: bool) -> Iterable[bytes]:
        self.calls.append((repository, digest, manifest))
        data = self.layout.read_blob(digest) if manifest else b"".join(self.layout.iter_blob(digest))
        if digest == self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return [data[: len(data) // 2], data[len(data) // 2 :]]


def _index_over(busybox_layout: Path) -> tuple[Path, str]:
    """Add a two-platform index to a copy of the busybox layout; returns (layout, index digest)."""
    layout = OciLayout.open(busybox_layout)
    amd = layout.resolve("busybox").with_annotations(**{"org.opencontainers.image.ref.name": None})
    other = amd.model_copy(update={"platform": Platform(architecture="s390x", os="linux")})
    index = ImageIndex(
        manifests=[other, amd.model_copy(update={"platform": Platform(architecture="amd64", os="linux")})]
    )
    return busybox_layout, layout.write_document(index, MEDIA_TYPE_INDEX).digest


def test_registry_base_by_digest(tmp_path: Path, busybox_layout: Path) -> None:
    layout_dir, index_digest = _index_over(busybox_layout)
    fake = FakeRegistry(layout_dir)
    out = OciLayout.create(tmp_path / "out")
    sources = BaseSources(fetch_blob=fake, platform=Platform(architecture="amd64", os="linux"))
    base = resolve_base(f"registry.example:5000/lib/bb@{index_digest}", out, context=None, sources=sources)
    assert base.manifest_digest == OciLayout.open(busybox_layout).resolve("busybox").digest
    assert base.uri == f"docker://registry.example:5000/lib/bb@{base.manifest_digest}"
    assert fake.calls[0] == ("registry.example:5000/lib/bb", index_digest, True)
    assert [c[2] for c in fake.calls] == [True, True, False, False]
    assert all(out.has_blob(d.digest) for d in base.layers)
    s390 = BaseSources(fetch_blob=fake, platform=Platform(architecture="riscv64", os="linux"))
    with pytest.raises(BaseNotFound, match="linux/s390x, linux/amd64"):
        resolve_base(f"r.example/bb@{index_digest}", out, context=None, sources=s390)


def test_registry_content_that_does_not_match_is_refused(tmp_path: Path, busybox_layout: Path) -> None:
    layout = OciLayout.open(busybox_layout)
    top = layout.resolve("busybox")
    layer = layout.read_manifest(top).layers[0].digest
    for tampered in (top.digest, layer):
        out = OciLayout.create(tmp_path / tampered[7:15])
        sources = BaseSources(fetch_blob=FakeRegistry(busybox_layout, tamper=tampered))
        with pytest.raises(BaseDigestMismatch) as err:
            resolve_base(f"r.example/bb@{top.digest}", out, context=None, sources=sources)
        assert err.value.code == "build.base.digest"
        assert not out.has_blob(layer)


def test_registry_needs_a_client_and_transient_errors_pass_through(tmp_path: Path) -> None:
    ref = "r.example/bb@sha256:" + "a" * 64
    out = OciLayout.create(tmp_path)
    with pytest.raises(BaseNotFound, match="no registry access"):
        resolve_base(ref, out, context=None)

    def down(repository: str, digest: str, /, *, manifest: bool) -> bytes:
        raise TransientError("registry unreachable")

    with pytest.raises(TransientError):
        resolve_base(ref, out, context=None, sources=BaseSources(fetch_blob=down))


def _one_layer_base(tmp_path: Path, *, diff_id: str | None = None, media_type: str | None = None) -> Path:
    layout = OciLayout.create(tmp_path / "bases" / "b")
    layer = write_layer(layout, [LayerEntry("f", EntryType.FILE, 0o644, size=1, data=b"x")], source_date_epoch=0)
    desc = layer.descriptor
    if media_type:
        desc = Descriptor(media_type=media_type, digest=desc.digest, size=desc.size)
    config = {"rootfs": {"type": "layers", "diff_ids": [diff_id or layer.diff_id]}, "os": "linux"}
    layout.write_image(config, [desc], tag="b")
    return tmp_path / "bases"


def test_base_layer_that_does_not_match_its_diff_id(tmp_path: Path) -> None:
    bases = _one_layer_base(tmp_path, diff_id="sha256:" + "0" * 64)
    with pytest.raises(BaseDigestMismatch, match="the config says"):
        resolve_base(f"oci:{bases}/b:b", OciLayout.create(tmp_path / "o"), context=None,
                     sources=BaseSources(oci_roots=(bases,)))  # fmt: skip


def test_zstd_base_layers_are_unsupported(tmp_path: Path) -> None:
    bases = _one_layer_base(tmp_path, media_type="application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(BaseUnsupported, match="zstd"):
        resolve_base(f"oci:{bases}/b:b", OciLayout.create(tmp_path / "o"), context=None,
                     sources=BaseSources(oci_roots=(bases,)))  # fmt: skip


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
