"""Base resolution: registry bases by digest, platforms from indexes, layers checked against digests and diff_ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from ccpipe.oci.documents import MEDIA_TYPE_INDEX, Descriptor, ImageIndex, Platform
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.stages.build.base.blob_sources import LayoutSource
from ccpipe.stages.build.base.load import pick_manifest
from ccpipe.stages.build.base.resolve import BaseSources, resolve_base
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseNotFound, BaseUnsupported
from ccpipe.stages.build.layer import EntryType, LayerEntry, write_layer


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



@pytest.mark.parametrize(
    ("data", "match"),
    [  # found by tests/fuzz: RecursionError, and TypeError from a list as mediaType
        (b"[" * 100_000 + b"]" * 100_000, "is not JSON"),
        (b'{"mediaType": [], "manifests": []}', "not a valid ImageManifest"),
    ],
)
def test_malformed_base_document_is_refused_with_a_ccpipe_error(tmp_path: Path, data: bytes, match: str) -> None:
    layout = OciLayout.create(tmp_path / "base")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout.add_blob([data], Descriptor(media_type=MEDIA_TYPE_INDEX, digest=digest, size=len(data)))
    with pytest.raises(CcpipeError, match=match):
        pick_manifest(LayoutSource(layout), digest, Platform(architecture="amd64", os="linux"), "base")
