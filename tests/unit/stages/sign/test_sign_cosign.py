"""cosign-format signatures and attestations in an OCI layout, and every rejection verify makes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.oci.cosign_names import DSSE_MEDIA_TYPE, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, signature_tag
from ccpipe.oci.errors import RefNotFound
from ccpipe.stages.sign.cosign import (
    attest_image,
    sign_image,
    verify_attestation,
    verify_image,
)
from ccpipe.stages.sign.errors import (
    SignatureDigestMismatch,
    SignatureIdentityMismatch,
    SignatureInvalid,
    SignatureMissing,
)
from tests.unit.stages.sign import raw_layout as layout

Image = Callable[..., Path]
REPO = "registry.local:5000/ccpipe/hello"


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _tagged_manifest(path: Path, tag: str) -> dict[str, Any]:
    return layout.read_manifest(path, tag)


def test_sig_manifest_has_cosign_layout(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    res = sign_image(src, "t", key, identity=REPO)
    digest = layout.find_descriptor(src, "t")["digest"]
    assert res.image_digest == digest and res.tag == digest.replace(":", "-") + ".sig"
    manifest = _tagged_manifest(src, res.tag)
    assert layout.find_tagged(src, res.tag)["digest"] == res.manifest_digest  # type: ignore[index]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE
    payload = layout.read_blob(src, layer["digest"])
    assert json.loads(payload) == {
        "critical": {
            "identity": {"docker-reference": REPO},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    # independent check: ECDSA-P256/SHA-256 over the exact stored bytes, DER, std base64
    key.public_key().verify(
        base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION]), payload, ec.ECDSA(hashes.SHA256())
    )
    config = json.loads(layout.read_blob(src, manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}


def test_sign_then_verify(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    sign_image(src, "t", key, identity=REPO, optional={"creator": "ccpipe"})
    payload = verify_image(src, "t", key.public_key(), identity=REPO)
    assert payload["optional"] == {"creator": "ccpipe"}
    # by digest too
    assert verify_image(src, layout.find_descriptor(src, "t")["digest"], key.public_key())


def test_second_signature_is_appended(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src, other = image(), ec.generate_private_key(ec.SECP256R1())
    sign_image(src, "t", key, identity=REPO)
    res = sign_image(src, "t", other, identity=REPO)
    assert len(_tagged_manifest(src, res.tag)["layers"]) == 2
    assert verify_image(src, "t", key.public_key()) and verify_image(src, "t", other.public_key())


def test_rejects_another_key(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    sign_image(src, "t", key, identity=REPO)
    with pytest.raises(SignatureInvalid) as info:
        verify_image(src, "t", ec.generate_private_key(ec.SECP256R1()).public_key())
    assert info.value.code == "sign.verify.signature"


def test_rejects_a_modified_payload(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    res = sign_image(src, "t", key, identity=REPO)
    manifest = _tagged_manifest(src, res.tag)
    forged = res.payload.replace(REPO.encode(), b"evil.example/ccpipe/hello")
    # rewrite the payload blob under its new digest and re-point the .sig manifest at it
    manifest["layers"][0]["digest"] = layout.write_blob(src, forged)
    manifest["layers"][0]["size"] = len(forged)
    raw = json.dumps(manifest).encode()
    layout.put_manifest(src, json.loads(raw), res.tag)
    with pytest.raises(SignatureInvalid):
        verify_image(src, "t", key.public_key())


def test_rejects_a_payload_modified_in_place(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    res = sign_image(src, "t", key, identity=REPO)
    blob = layout.blob_path(src, _tagged_manifest(src, res.tag)["layers"][0]["digest"])
    blob.write_bytes(blob.read_bytes().replace(b"ccpipe", b"evil!!"))
    with pytest.raises(SignatureInvalid):
        verify_image(src, "t", key.public_key())


def test_rejects_a_signature_over_another_digest(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    a, b = image("a"), image("b", layers=1)
    res = sign_image(a, "t", key, identity=REPO)
    # copy A's (valid) signature manifest to where B's signature would be
    sig_manifest = _tagged_manifest(a, res.tag)
    for blob in [sig_manifest["config"]["digest"], *[la["digest"] for la in sig_manifest["layers"]]]:
        layout.copy_blob(a, b, blob)
    layout.copy_blob(a, b, res.manifest_digest)
    b_digest = layout.find_descriptor(b, "t")["digest"]
    layout.tag_descriptor(b, layout.find_tagged(a, res.tag), signature_tag(b_digest))  # type: ignore[arg-type]
    with pytest.raises(SignatureDigestMismatch, match=res.image_digest) as info:
        verify_image(b, "t", key.public_key())
    assert info.value.code == "sign.verify.digest"


def test_rejects_another_identity_and_missing_signatures(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    with pytest.raises(SignatureMissing):
        verify_image(src, "t", key.public_key())
    sign_image(src, "t", key, identity=REPO)
    with pytest.raises(SignatureIdentityMismatch):
        verify_image(src, "t", key.public_key(), identity="registry.local:5000/other")
    with pytest.raises(RefNotFound):
        verify_image(src, "nope", key.public_key())


def test_attestation_round_trip_and_layout(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    src = image()
    predicate = {"buildDefinition": {"buildType": "https://ccpipe.dev/build/v1"}, "runDetails": {}}
    res = attest_image(
        src, "t", key, predicate_type="https://slsa.dev/provenance/v1", predicate=predicate, identity=REPO
    )
    assert res.tag.endswith(".att")
    [layer] = _tagged_manifest(src, res.tag)["layers"]
    assert layer["mediaType"] == DSSE_MEDIA_TYPE
    assert layer["annotations"] == {SIGNATURE_ANNOTATION: "", "predicateType": "https://slsa.dev/provenance/v1"}
    envelope = json.loads(layout.read_blob(src, layer["digest"]))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    found = verify_attestation(src, "t", key.public_key(), predicate_type="https://slsa.dev/provenance/v1")
    assert found.format == "bundle"  # the bundle referrer is read before the .att
    doc = found.document
    assert doc["predicate"] == predicate
    assert doc["subject"][0]["digest"]["sha256"] == res.image_digest.split(":")[1]


def test_attestation_rejections(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    a, b = image("a"), image("b", layers=1)
    with pytest.raises(SignatureMissing):
        verify_attestation(a, "t", key.public_key())
    res = attest_image(a, "t", key, predicate_type="https://slsa.dev/provenance/v1", predicate={})
    with pytest.raises(SignatureInvalid):
        verify_attestation(a, "t", ec.generate_private_key(ec.SECP256R1()).public_key())
    # A's attestation presented for B
    att = _tagged_manifest(a, res.tag)
    for blob in [att["config"]["digest"], *[la["digest"] for la in att["layers"]], res.manifest_digest]:
        layout.copy_blob(a, b, blob)
    b_digest = layout.find_descriptor(b, "t")["digest"]
    layout.tag_descriptor(b, layout.find_tagged(a, res.tag), b_digest.replace(":", "-") + ".att")  # type: ignore[arg-type]
    with pytest.raises(SignatureDigestMismatch):
        verify_attestation(b, "t", key.public_key())


def test_malformed_signature_manifests_are_refused(image: Image, key: ec.EllipticCurvePrivateKey) -> None:
    from ccpipe.stages.sign.errors import PayloadInvalid

    src = image()
    res = sign_image(src, "t", key, identity=REPO)
    manifest = _tagged_manifest(src, res.tag)
    manifest["layers"][0]["digest"] = "sha256:../../../etc/passwd"  # a path, not a digest
    raw = json.dumps(manifest).encode()
    layout.put_manifest(src, json.loads(raw), res.tag)
    with pytest.raises(SignatureInvalid):
        verify_image(src, "t", key.public_key())
    manifest["layers"] = "nope"
    raw = json.dumps(manifest).encode()
    layout.put_manifest(src, json.loads(raw), res.tag)
    with pytest.raises(PayloadInvalid):
        verify_image(src, "t", key.public_key())
