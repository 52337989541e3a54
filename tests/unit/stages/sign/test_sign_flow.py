"""The stage's whole core flow by hand: encrypt for the KBS, sign, attest, verify, decrypt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ccpipe.oci.layout import LayoutRef
from ccpipe.stages.sign import (
    ImageKey,
    KbsRecipient,
    attest_image,
    decrypt_image,
    encrypt_image,
    generate_keys,
    kbs_resource_uri,
    load_private_key,
    load_public_key,
    parse_recipient,
    sign_image,
    verify_attestation,
    verify_image,
)
from ccpipe.stages.sign.errors import RecipientInvalid
from tests.unit.stages.sign.sign_helpers import layer_digests, run


def test_encrypt_sign_attest_verify_decrypt(image: Callable[..., Path], tmp_path: Path) -> None:
    src, out = image(gzip_layers=False), tmp_path / "signed"
    key = ImageKey.generate(kbs_resource_uri("default", "image-key", "wl-42"))
    enc = encrypt_image(f"oci:{src}:t", f"oci:{out}:v1", [KbsRecipient(key)])
    key_path, pub_path = generate_keys(tmp_path / "cosign", "pw")
    signer = load_private_key(key_path, "pw")
    sig = sign_image(out, "v1", signer, identity="reg.local/wl")
    attest_image(
        out,
        "v1",
        signer,
        predicate_type="https://slsa.dev/provenance/v1",
        predicate={"buildDefinition": {"externalParameters": {"source": enc.source_manifest_digest}}},
        identity="reg.local/wl",
    )
    assert sig.image_digest == enc.manifest_digest
    pub = load_public_key(pub_path)
    assert verify_image(out, "v1", pub, identity="reg.local/wl")["critical"]["image"]["docker-manifest-digest"] == (
        enc.manifest_digest
    )
    provenance = verify_attestation(out, "v1", pub).document["predicate"]
    assert provenance["buildDefinition"]["externalParameters"]["source"] == enc.source_manifest_digest
    decrypt_image(f"{out}:v1", f"{tmp_path / 'plain'}:t", [key])
    assert layer_digests(tmp_path / "plain") == layer_digests(src)


def test_skopeo_still_copies_an_image_whose_layout_holds_signatures(
    image: Callable[..., Path], tmp_path: Path, rsa_pair: tuple[Path, Path]
) -> None:
    src, out = image(), tmp_path / "signed"
    encrypt_image(f"{src}:t", f"{out}:t", [parse_recipient(f"jwe:{rsa_pair[1]}")])
    _, pub_path = generate_keys(tmp_path / "k", None)
    sign_image(out, "t", load_private_key(tmp_path / "k.key"))
    run("skopeo", "copy", "--decryption-key", rsa_pair[0], f"oci:{out}:t", f"oci:{tmp_path / 'dec'}:t")
    assert layer_digests(tmp_path / "dec") == layer_digests(src)
    assert verify_image(out, "t", load_public_key(pub_path))
    assert verify_image(out, "t", pub_path) == verify_image(out, "t", pub_path.read_bytes())  # path or PEM
    decrypt_image(f"{out}:t", tmp_path / "dec2", [str(rsa_pair[0])])  # a key path, as skopeo takes it
    assert layer_digests(tmp_path / "dec2") == layer_digests(src)


def test_references_and_recipient_specs(tmp_path: Path) -> None:
    assert LayoutRef.parse("oci:/a/b:tag") == LayoutRef(Path("/a/b"), "tag")
    assert LayoutRef.parse("/a/b") == LayoutRef(Path("/a/b"), None)
    assert LayoutRef.parse(tmp_path) == LayoutRef(tmp_path, None)
    with pytest.raises(RecipientInvalid):
        parse_recipient("pgp:someone@example.com")
    with pytest.raises(RecipientInvalid, match="cannot read"):
        parse_recipient(f"jwe:{tmp_path / 'missing.pem'}")
