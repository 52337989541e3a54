"""Image-level encryption between OCI layouts: manifest rewrite, round trips, tampering, wrong keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ccpipe.oci.errors import BlobDigestMismatch, RefNotFound
from ccpipe.stages.sign.encrypt import decrypt_image, encrypt_image, encrypt_image_for_kbs
from ccpipe.stages.sign.errors import (
    HmacMismatch,
    NoDecryptionKey,
    RecipientInvalid,
    UnsupportedLayer,
)
from ccpipe.stages.sign.recipients import (
    ANNOTATION_ATTESTATION_AGENT,
    ANNOTATION_JWE,
    ImageKey,
    JweRecipient,
    KbsRecipient,
    load_decryption_key,
)
from tests.unit.stages.sign import raw_layout as layout
from tests.unit.stages.sign.sign_helpers import layer_digests

Image = Callable[..., Path]


def _manifest(path: Path, tag: str = "t") -> dict:  # type: ignore[type-arg]
    return layout.read_manifest(path, tag)


def test_encrypted_manifest_follows_ocicrypt(image: Image, tmp_path: Path, rsa_pair: tuple[Path, Path]) -> None:
    src = image()
    res = encrypt_image(f"{src}:t", f"oci:{tmp_path / 'enc'}", [JweRecipient.from_file(rsa_pair[1])])
    before, after = _manifest(src), _manifest(tmp_path / "enc")
    assert res.ref == "t" and res.source_manifest_digest == layout.find_descriptor(src, "t")["digest"]
    assert after["config"] == before["config"]  # config (plaintext diff_ids) is untouched
    for old, new in zip(before["layers"], after["layers"], strict=True):
        assert new["mediaType"] == old["mediaType"] + "+encrypted"
        assert new["size"] == old["size"] and new["digest"] != old["digest"]
        assert set(new["annotations"]) == {ANNOTATION_JWE, "org.opencontainers.image.enc.pubopts"}
        # the stored blob is named by its own (ciphertext) digest
        assert layout.read_blob(tmp_path / "enc", new["digest"], max_size=1 << 30)
    assert res.key_resources == ()


def test_round_trip_restores_the_exact_layers(image: Image, tmp_path: Path, ec_pair: tuple[Path, Path]) -> None:
    src = image(layers=3)
    encrypt_image(f"{src}:t", tmp_path / "enc", [JweRecipient.from_file(ec_pair[1])])
    res = decrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "dec", [load_decryption_key(ec_pair[0])])
    assert layer_digests(tmp_path / "dec") == layer_digests(src)
    assert _manifest(tmp_path / "dec") == _manifest(src)  # enc.* annotations dropped, media types restored
    assert all(change.changed for change in res.layers)


def test_kbs_encryption_returns_the_key_and_keeps_it_out_of_the_result(image: Image, tmp_path: Path) -> None:
    src = image()
    res, key = encrypt_image_for_kbs(f"{src}:t", tmp_path / "enc", "kbs:///default/image-key/wl-1")
    assert res.key_resources == ("kbs:///default/image-key/wl-1",)
    assert key.kek.hex() not in repr(res) and base64.b64encode(key.kek).decode() not in repr(res)
    for layer in _manifest(tmp_path / "enc")["layers"]:
        assert set(layer["annotations"]) == {ANNOTATION_ATTESTATION_AGENT, "org.opencontainers.image.enc.pubopts"}
    # the KEK is nowhere in the written layout
    for f in (tmp_path / "enc").rglob("*"):
        if f.is_file():
            assert key.kek not in f.read_bytes() and base64.b64encode(key.kek) not in f.read_bytes()
    decrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "dec", [lambda kid: key.kek if kid == key.kid else None])
    assert layer_digests(tmp_path / "dec") == layer_digests(src)


def test_jwe_and_kbs_recipients_together(image: Image, tmp_path: Path, rsa_pair: tuple[Path, Path]) -> None:
    src, key = image(), ImageKey.generate("kbs:///default/image-key/both")
    encrypt_image(f"{src}:t", tmp_path / "enc", [JweRecipient.from_file(rsa_pair[1]), KbsRecipient(key)])
    decrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "d1", [key])
    decrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "d2", [load_decryption_key(rsa_pair[0])])
    assert layer_digests(tmp_path / "d1") == layer_digests(tmp_path / "d2") == layer_digests(src)


def _assert_no_output(dst: Path) -> None:
    if dst.exists():
        assert layout.read_index(dst)["manifests"] == []
        assert not [p for p in (dst / "blobs").rglob(".*")]  # no temporary blob left behind


def test_flipped_ciphertext_byte_fails_hmac_and_leaves_nothing(
    image: Image, tmp_path: Path, rsa_pair: tuple[Path, Path]
) -> None:
    src, enc = image(layers=1), tmp_path / "enc"
    encrypt_image(f"{src}:t", enc, [JweRecipient.from_file(rsa_pair[1])])
    manifest = _manifest(enc)
    blob = layout.blob_path(enc, manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    # a careful attacker re-addresses the blob and the manifest, so only the HMAC can tell
    new_digest = layout.write_blob(enc, bytes(data))
    manifest["layers"][0]["digest"] = new_digest
    raw = json.dumps(manifest).encode()
    layout.put_manifest(enc, json.loads(raw), "t")
    with pytest.raises(HmacMismatch, match="HMAC") as info:
        decrypt_image(f"{enc}:t", tmp_path / "dec", [load_decryption_key(rsa_pair[0])])
    assert info.value.code == "sign.decrypt.hmac"
    _assert_no_output(tmp_path / "dec")


def test_flipped_byte_in_place_is_also_caught(image: Image, tmp_path: Path, rsa_pair: tuple[Path, Path]) -> None:
    src, enc = image(layers=1), tmp_path / "enc"
    encrypt_image(f"{src}:t", enc, [JweRecipient.from_file(rsa_pair[1])])
    blob = layout.blob_path(enc, _manifest(enc)["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[3] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(HmacMismatch):
        decrypt_image(f"{enc}:t", tmp_path / "dec", [load_decryption_key(rsa_pair[0])])
    _assert_no_output(tmp_path / "dec")


def test_wrong_key_fails_cleanly(
    image: Image, tmp_path: Path, rsa_pair: tuple[Path, Path], ec_pair: tuple[Path, Path]
) -> None:
    src = image()
    encrypt_image(f"{src}:t", tmp_path / "enc", [JweRecipient.from_file(rsa_pair[1])])
    with pytest.raises(NoDecryptionKey, match="JWE") as info:
        decrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "dec", [load_decryption_key(ec_pair[0])])
    assert info.value.code == "sign.decrypt.nokey" and info.value.hint
    _assert_no_output(tmp_path / "dec")


def test_layer_selection_and_already_encrypted(image: Image, tmp_path: Path, ec_pair: tuple[Path, Path]) -> None:
    src, rec = image(layers=3), [JweRecipient.from_file(ec_pair[1])]
    encrypt_image(f"{src}:t", tmp_path / "enc", rec, layers=[-1])
    types = [layer["mediaType"] for layer in _manifest(tmp_path / "enc")["layers"]]
    assert [t.endswith("+encrypted") for t in types] == [False, False, True]
    with pytest.raises(UnsupportedLayer, match="already encrypted"):
        encrypt_image(f"{tmp_path / 'enc'}:t", tmp_path / "enc2", rec)


def test_docker_manifests_and_missing_inputs_are_refused(image: Image, tmp_path: Path) -> None:
    src = image(layers=1)
    manifest = _manifest(src)
    manifest["mediaType"] = layout.DOCKER_MANIFEST
    raw = json.dumps(manifest).encode()
    layout.put_manifest(src, json.loads(raw), "docker", layout.DOCKER_MANIFEST)
    key = [KbsRecipient(ImageKey.generate("kbs:///a/b/c"))]
    with pytest.raises(UnsupportedLayer, match="OCI"):
        encrypt_image(f"{src}:docker", tmp_path / "enc", key)
    with pytest.raises(RefNotFound, match="no image called"):
        encrypt_image(f"{src}:nope", tmp_path / "enc", key)
    with pytest.raises(RecipientInvalid):
        encrypt_image(f"{src}:t", tmp_path / "enc", [])


def test_damaged_source_layer_is_not_sealed(image: Image, tmp_path: Path) -> None:
    src = image(layers=1)
    blob = layout.blob_path(src, _manifest(src)["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobDigestMismatch):
        encrypt_image(f"{src}:t", tmp_path / "enc", [KbsRecipient(ImageKey.generate("kbs:///a/b/c"))])
    _assert_no_output(tmp_path / "enc")


def test_wrapped_digest_that_does_not_match_the_plaintext_is_refused(image: Image, tmp_path: Path) -> None:
    from ccpipe.stages.sign.errors import PlaintextDigestMismatch
    from ccpipe.stages.sign.ocicrypt import PrivateOptions
    from ccpipe.stages.sign.recipients import unwrap_private_options, wrap_private_options

    src, enc = image(layers=1), tmp_path / "enc"
    key = ImageKey.generate("kbs:///default/image-key/forged")
    encrypt_image(f"{src}:t", enc, [KbsRecipient(key)])
    manifest = _manifest(enc)
    layer = manifest["layers"][0]
    opts = unwrap_private_options(layer["annotations"], [key])
    forged = PrivateOptions(opts.symkey, "sha256:" + "0" * 64, opts.nonce)  # valid HMAC, lying digest
    layer["annotations"].update(wrap_private_options(forged, [KbsRecipient(key)]))
    layout.put_manifest(enc, manifest, "t")
    with pytest.raises(PlaintextDigestMismatch) as info:
        decrypt_image(f"{enc}:t", tmp_path / "dec", [key])
    assert info.value.code == "sign.decrypt.digest"
    _assert_no_output(tmp_path / "dec")
