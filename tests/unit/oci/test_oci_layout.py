"""OCI layout I/O: blobs by digest, index.json tags, refusal of corrupt or foreign content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ccpipe.oci.documents import ANNOTATION_REF_NAME, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, Descriptor
from ccpipe.oci.errors import BlobDigestMismatch, BlobMissing, OciLayoutError, RefNotFound
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.digest import sha256_digest


def test_create_writes_marker_and_empty_index(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path / "l")
    assert json.loads((tmp_path / "l" / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "l" / "index.json").read_bytes())
    assert index == {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    assert OciLayout.open(layout.root).read_index().manifests == []


def test_blob_round_trip_and_digest(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    desc = layout.write_blob(b"hello", MEDIA_TYPE_CONFIG)
    assert desc.digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert desc.size == 5
    assert layout.blob_path(desc.digest).read_bytes() == b"hello"
    assert layout.read_blob(desc.digest) == b"hello"
    assert not list((tmp_path / "blobs" / "sha256").glob(".tmp-*")), "temporary files left behind"


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    desc = layout.write_blob(b"hello", MEDIA_TYPE_CONFIG)
    layout.blob_path(desc.digest).write_bytes(b"jello")
    with pytest.raises(BlobDigestMismatch) as err:
        layout.read_blob(desc.digest)
    assert err.value.code == "oci.blob.digest"


def test_add_blob_refuses_wrong_content_and_leaves_nothing(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    claimed = Descriptor(media_type=MEDIA_TYPE_LAYER_GZIP, digest=sha256_digest(b"good"), size=4)
    with pytest.raises(BlobDigestMismatch):
        layout.add_blob([b"ba", b"ad"], claimed)
    assert not layout.has_blob(claimed.digest)
    assert not list((tmp_path / "blobs" / "sha256").iterdir())
    with pytest.raises(BlobDigestMismatch, match="longer"):
        layout.add_blob([b"good", b"extra"], claimed)
    assert layout.add_blob([b"go", b"od"], claimed) == claimed


def test_missing_blob(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    with pytest.raises(BlobMissing):
        layout.read_blob(sha256_digest(b"absent"))


@pytest.mark.parametrize("digest", ["sha256:../../etc/passwd", "md5:abcd", "sha256:ABC", "sha256:" + "0" * 63])
def test_malformed_digests_never_become_paths(tmp_path: Path, digest: str) -> None:
    layout = OciLayout.create(tmp_path)
    with pytest.raises(OciLayoutError) as err:
        layout.blob_path(digest)
    assert err.value.code == "oci.digest.invalid"


def test_tag_moves_and_resolve(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    a = layout.write_image({"rootfs": {"type": "layers", "diff_ids": []}}, [], tag="v1")
    b = layout.write_image({"rootfs": {"type": "layers", "diff_ids": []}, "x": 1}, [], tag="v2")
    assert layout.resolve("v1").digest == a.digest
    assert layout.resolve("v2").digest == b.digest
    layout.tag(b, "v1")
    assert layout.resolve("v1").digest == b.digest
    names = sorted(d.annotations[ANNOTATION_REF_NAME] for d in layout.read_index().manifests if d.annotations)
    assert names == ["v1", "v2"]
    with pytest.raises(RefNotFound, match="known: v1, v2"):
        layout.resolve("nope")
    with pytest.raises(RefNotFound, match="reference name is needed"):
        layout.resolve(None)


@pytest.mark.parametrize("name", ["", "a b", "../x", "x\n"])
def test_invalid_ref_names(tmp_path: Path, name: str) -> None:
    layout = OciLayout.create(tmp_path)
    d = layout.write_image({"rootfs": {"type": "layers", "diff_ids": []}}, [])
    with pytest.raises(OciLayoutError):
        layout.tag(d, name)


def test_write_image_needs_its_layers(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    ghost = Descriptor(media_type=MEDIA_TYPE_LAYER_GZIP, digest=sha256_digest(b"x"), size=1)
    with pytest.raises(BlobMissing):
        layout.write_image({}, [ghost], tag="t")


def test_open_refuses_non_layouts(tmp_path: Path) -> None:
    with pytest.raises(OciLayoutError) as err:
        OciLayout.open(tmp_path)
    assert err.value.code == "oci.layout.not_found"
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(OciLayoutError, match="imageLayoutVersion"):
        OciLayout.open(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (tmp_path / "index.json").write_text('{"manifests": [{"digest": 5}]}')
    with pytest.raises(OciLayoutError, match="manifests"):
        OciLayout.open(tmp_path)


def test_open_or_create_refuses_a_full_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(OciLayoutError) as err:
        OciLayout.open_or_create(tmp_path)
    assert err.value.code == "oci.layout.not_empty"


def test_unknown_fields_survive_a_rewrite(tmp_path: Path) -> None:
    layout = OciLayout.create(tmp_path)
    d = layout.write_image({}, [], tag="t")
    index = json.loads((tmp_path / "index.json").read_bytes())
    index["manifests"][0]["futureField"] = {"a": 1}
    (tmp_path / "index.json").write_text(json.dumps(index))
    layout.tag(d, "u")
    again = json.loads((tmp_path / "index.json").read_bytes())
    assert any(m.get("futureField") == {"a": 1} for m in again["manifests"])
