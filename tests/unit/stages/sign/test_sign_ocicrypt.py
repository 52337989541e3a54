"""The AES_256_CTR_HMAC_SHA256 stream cipher: exact bytes, HMAC, digests, flat memory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ccpipe.oci.errors import BlobDigestMismatch
from ccpipe.stages.sign.errors import (
    EncryptionMetadataInvalid,
    HmacMismatch,
    PlaintextDigestMismatch,
    UnsupportedCipher,
)
from ccpipe.stages.sign.ocicrypt import (
    ANNOTATION_PUBOPTS,
    PrivateOptions,
    PublicOptions,
    decrypt_file,
    decrypt_stream,
    encrypt_stream,
)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_ciphertext_is_aes_ctr_with_hmac_over_ciphertext(size: int) -> None:
    plain = os.urandom(size)
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(plain), out, chunk_size=4096)
    ct = out.getvalue()
    # independent one-shot computation of what ocicrypt specifies
    ref = Cipher(algorithms.AES(res.private.symkey), modes.CTR(res.private.nonce)).encryptor().update(plain)
    assert ct == ref
    assert res.public.hmac == hmac.new(res.private.symkey, ct, hashlib.sha256).digest()
    assert res.private.digest == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert res.cipher_digest == "sha256:" + hashlib.sha256(ct).hexdigest()
    assert res.size == size
    back = io.BytesIO()
    assert decrypt_stream(io.BytesIO(ct), back, res.private, res.public, chunk_size=4096) == (res.private.digest, size)
    assert back.getvalue() == plain


def test_every_layer_gets_a_fresh_key_and_nonce() -> None:
    a = encrypt_stream(io.BytesIO(b"same"), io.BytesIO())
    b = encrypt_stream(io.BytesIO(b"same"), io.BytesIO())
    assert a.private.symkey != b.private.symkey and a.private.nonce != b.private.nonce
    assert len(a.private.symkey) == 32 and len(a.private.nonce) == 16


def test_option_json_matches_ocicrypt() -> None:
    res = encrypt_stream(io.BytesIO(b"abc"), io.BytesIO())
    priv = json.loads(res.private.to_json())
    assert list(priv) == ["symkey", "digest", "cipheroptions"]
    assert base64.b64decode(priv["symkey"]) == res.private.symkey
    assert base64.b64decode(priv["cipheroptions"]["nonce"]) == res.private.nonce
    pub = json.loads(base64.b64decode(res.public.to_annotation()))
    assert pub == {
        "cipher": "AES_256_CTR_HMAC_SHA256",
        "hmac": base64.b64encode(res.public.hmac).decode(),
        "cipheroptions": {},
    }
    assert PrivateOptions.from_json(res.private.to_json()) == res.private
    assert "symkey" not in repr(res.private) and repr(res.private.symkey) not in repr(res)


def test_flipped_ciphertext_byte_fails_the_hmac() -> None:
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(os.urandom(10000)), out, chunk_size=4096)
    ct = bytearray(out.getvalue())
    ct[7777] ^= 1
    with pytest.raises(HmacMismatch, match="HMAC"):
        decrypt_stream(io.BytesIO(bytes(ct)), io.BytesIO(), res.private, res.public)


def test_wrong_plaintext_digest_in_private_options_is_refused() -> None:
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(b"payload"), out)
    forged = PrivateOptions(res.private.symkey, "sha256:" + "0" * 64, res.private.nonce)
    with pytest.raises(PlaintextDigestMismatch):
        decrypt_stream(io.BytesIO(out.getvalue()), io.BytesIO(), forged, res.public)


def test_ciphertext_digest_is_checked_when_given() -> None:
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(b"payload"), out)
    with pytest.raises(BlobDigestMismatch):
        decrypt_stream(
            io.BytesIO(out.getvalue()),
            io.BytesIO(),
            res.private,
            res.public,
            expected_cipher_digest="sha256:" + "1" * 64,
        )


def test_source_layer_must_match_its_digest() -> None:
    with pytest.raises(BlobDigestMismatch):
        encrypt_stream(io.BytesIO(b"damaged"), io.BytesIO(), expected_digest="sha256:" + "2" * 64)


def test_public_options_are_required_and_checked() -> None:
    with pytest.raises(EncryptionMetadataInvalid, match="no HMAC"):
        PublicOptions.from_annotations({})
    other = base64.b64encode(json.dumps({"cipher": "AES_128_GCM", "hmac": "", "cipheroptions": {}}).encode())
    with pytest.raises(UnsupportedCipher):
        PublicOptions.from_annotations({ANNOTATION_PUBOPTS: other.decode()})
    with pytest.raises(EncryptionMetadataInvalid):
        PublicOptions.from_annotations({ANNOTATION_PUBOPTS: "not base64!"})


def test_decrypt_file_leaves_nothing_on_hmac_failure(tmp_path: Path) -> None:
    src, enc, dst = tmp_path / "plain", tmp_path / "enc", tmp_path / "out"
    src.write_bytes(os.urandom(50000))
    with src.open("rb") as s, enc.open("wb") as d:
        res = encrypt_stream(s, d)
    data = bytearray(enc.read_bytes())
    data[-1] ^= 0x80
    enc.write_bytes(bytes(data))
    with pytest.raises(HmacMismatch):
        decrypt_file(enc, dst, res.private, res.public)
    assert set(tmp_path.iterdir()) == {src, enc}


class _Zeros(io.RawIOBase):
    """A readable stream of n zero bytes that never holds them in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        memoryview(b)[:n] = bytes(n) if n < 4096 else b"\0" * n
        self.left -= n
        return n


class _Sink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return len(b)


def test_memory_stays_flat_whatever_the_size() -> None:
    tracemalloc.start()
    try:
        res = encrypt_stream(_Zeros(64 << 20), _Sink())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.size == 64 << 20
    assert peak < 12 << 20, f"peak {peak} bytes for a 64 MiB stream"
