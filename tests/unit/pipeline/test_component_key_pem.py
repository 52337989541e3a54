"""Component keys are read without the serialization module when they are plain PKCS#8 Ed25519 PEM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from ccpipe.pipeline.event_signature import _plain_ed25519_pem, read_ed25519_private_key
from ccpipe.pipeline.keyfiles import KeyMaterialError


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def test_a_plain_key_reads_as_the_pem_loader_reads_it(tmp_path: Path) -> None:
    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fast = _plain_ed25519_pem(pem)
        assert fast is not None and fast.private_bytes_raw() == key.private_bytes_raw()
    read = read_ed25519_private_key(_write(tmp_path / "k.pem", pem))
    assert read.private_bytes_raw() == key.private_bytes_raw()


def test_anything_else_goes_to_the_pem_loader_with_its_errors(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    encrypted = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw"))
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    plain = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    for data in (encrypted, ec_pem, plain.replace(b"MC4C", b"MC4D"), plain + b"trailing", b"garbage"):
        assert _plain_ed25519_pem(data) is None
    with pytest.raises(KeyMaterialError, match="does not hold an Ed25519 key"):
        read_ed25519_private_key(_write(tmp_path / "ec.pem", ec_pem))
    with pytest.raises(KeyMaterialError, match="not a PEM private key"):
        read_ed25519_private_key(_write(tmp_path / "bad.pem", b"garbage"))
