"""cosign key files: generate, load, refuse wrong passwords and foreign parameters."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ccpipe.stages.sign.errors import KeyExists, KeyInvalid, KeyPasswordInvalid
from ccpipe.stages.sign.keys import (
    PEM_COSIGN,
    encrypt_private_key,
    generate_keys,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign_bytes,
    verify_bytes,
)


def _body(pem: bytes) -> dict[str, Any]:
    lines = pem.decode().strip().splitlines()
    doc: dict[str, Any] = json.loads(base64.b64decode("".join(lines[1:-1])))
    return doc


def test_generate_keys_like_cosign(tmp_path: Path) -> None:
    key_path, pub_path = generate_keys(tmp_path / "cosign", "s3cret")
    assert (key_path.name, pub_path.name) == ("cosign.key", "cosign.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    pem = key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = _body(pem)
    assert body["kdf"]["name"] == "scrypt" and body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(body["cipher"]["nonce"])) == 24
    key = load_private_key(key_path, "s3cret")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    pub = load_public_key(pub_path)
    assert verify_bytes(pub, sign_bytes(key, b"msg"), b"msg")
    assert public_key_pem(key) == pub_path.read_bytes()


def test_wrong_password_and_overwrite_are_refused(tmp_path: Path) -> None:
    key_path, _ = generate_keys(tmp_path / "k", b"right")
    with pytest.raises(KeyPasswordInvalid):
        load_private_key(key_path, "wrong")
    with pytest.raises(KeyExists):
        generate_keys(tmp_path / "k", "other")
    assert load_private_key(key_path, "right")


def test_reads_a_key_sealed_independently_with_other_parameters() -> None:
    # built here from the format description alone (N=65536, COSIGN PEM type, as skopeo writes it)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(24)
    box = nacl.secret.SecretBox(Scrypt(salt=salt, length=32, n=65536, r=8, p=1).derive(b"pw"))
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(box.encrypt(der, nonce).ciphertext).decode(),
    }
    pem = (
        f"-----BEGIN {PEM_COSIGN}-----\n"
        + base64.encodebytes(json.dumps(doc).encode()).decode()
        + f"-----END {PEM_COSIGN}-----\n"
    ).encode()
    loaded = load_private_key(pem, "pw")
    assert loaded.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_our_sealed_key_opens_with_the_format_alone() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = _body(encrypt_private_key(key, "pw"))
    box_key = Scrypt(salt=base64.b64decode(body["kdf"]["salt"]), length=32, n=32768, r=8, p=1).derive(b"pw")
    der = nacl.secret.SecretBox(box_key).decrypt(
        base64.b64decode(body["ciphertext"]), base64.b64decode(body["cipher"]["nonce"])
    )
    assert serialization.load_der_private_key(der, None).public_key() == key.public_key()


def test_unaccepted_scrypt_parameters_are_refused() -> None:
    pem = encrypt_private_key(ec.generate_private_key(ec.SECP256R1()), "pw")
    body = _body(pem)
    body["kdf"]["params"]["N"] = 1 << 24  # would cost 16 GiB of memory: never attempted
    forged = (
        b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        + base64.b64encode(json.dumps(body).encode())
        + b"\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyInvalid, match="scrypt"):
        load_private_key(forged, "pw")


def test_plain_pem_keys(tmp_path: Path) -> None:
    key_path, pub_path = generate_keys(tmp_path / "plain", None)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_private_key(key_path)
    assert verify_bytes(load_public_key(pub_path), sign_bytes(key, b"x"), b"x")
    with pytest.raises(KeyInvalid):
        load_private_key(b"not a key")
    with pytest.raises(KeyInvalid):
        load_public_key(key_path)


def test_signatures_are_der_ecdsa_sha256_checked_by_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = sign_bytes(key, b"payload")
    key.public_key().verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))  # independent check
    assert not verify_bytes(key.public_key(), sig, b"payload!")
    assert not verify_bytes(ec.generate_private_key(ec.SECP256R1()).public_key(), sig, b"payload")
