"""The KBS resource JWE: Trustee's exact header, joserfc interop, tampering refused; TEE JWKs and thumbprints."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from ccpipe.crypto import jose
from ccpipe.crypto.jose import b64url, jwk_thumbprint, public_jwk
from ccpipe.schemas.kbs import FlattenedJwe
from ccpipe.stages.attest.kbs.binding import import_tee_pubkey
from ccpipe.stages.attest.kbs.client import RESOURCE_ALGORITHMS, KbsSession
from ccpipe.stages.attest.kbs.errors import KbsClientError, TeePubkeyInvalid


def encrypt_resource(plain: bytes, key: jose.PublicKey) -> FlattenedJwe:
    return FlattenedJwe(**jose.encrypt_flattened(plain, key))


def decrypt_resource(obj: dict[str, Any], key: jose.PrivateKey) -> bytes:
    return jose.decrypt(obj, key, algorithms=RESOURCE_ALGORITHMS)

ALGS = ["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"]


def _decrypt(obj: dict[str, Any], key: Any) -> bytes | None:
    return jwe.decrypt_json(cast(Any, obj), key, algorithms=ALGS).plaintext


def _private(key: ECKey | RSAKey) -> Any:
    return key.private_key


def header(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(obj["protected"] + "==")))


def test_kbs_jwe_ecdh_header_is_trustees_and_joserfc_decrypts() -> None:
    key = ECKey.generate_key("P-256", private=True)
    obj = encrypt_resource(b"image key", import_tee_pubkey(key.as_dict(private=False))).model_dump()
    raw_header = base64.urlsafe_b64decode(obj["protected"] + "==").decode()
    # alg, enc, then epk with crv, kty, x, y: the exact order Trustee's serde writes
    assert raw_header.startswith('{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":')
    assert len(base64.urlsafe_b64decode(obj["encrypted_key"] + "==")) == 40
    assert len(base64.urlsafe_b64decode(obj["iv"] + "==")) == 12
    assert "aad" not in obj and "header" not in obj
    assert _decrypt(obj, key) == b"image key"


def test_kbs_jwe_rsa_oaep_256_and_p521() -> None:
    rkey = RSAKey.generate_key(2048, private=True)
    obj = encrypt_resource(b"k", import_tee_pubkey({**rkey.as_dict(private=False), "alg": "RSA-OAEP-256"}))
    assert header(obj.model_dump()) == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    assert _decrypt(obj.model_dump(), rkey) == b"k"
    p521 = ECKey.generate_key("P-521", private=True)
    obj = encrypt_resource(b"k", import_tee_pubkey(p521.as_dict(private=False)))
    assert _decrypt(obj.model_dump(), p521) == b"k"


@pytest.mark.parametrize("member", ["ciphertext", "tag", "iv", "encrypted_key", "protected"])
def test_kbs_jwe_tampering_does_not_decrypt(member: str) -> None:
    # Neither joserfc nor the client's own decryptor opens an altered JWE.
    key = ECKey.generate_key("P-256", private=True)
    obj = encrypt_resource(b"secret", import_tee_pubkey(key.as_dict(private=False))).model_dump()
    raw = bytearray(base64.urlsafe_b64decode(obj[member] + "=="))
    raw[len(raw) // 2] ^= 0x01
    obj[member] = b64url(bytes(raw))
    with pytest.raises((JoseError, ValueError)):
        _decrypt(obj, key)
    with pytest.raises(ValueError):
        decrypt_resource(obj, _private(key))


def test_kbs_jwe_other_key_does_not_decrypt() -> None:
    obj = encrypt_resource(b"secret", import_tee_pubkey(ECKey.generate_key("P-256").as_dict(private=False)))
    with pytest.raises(JoseError):
        _decrypt(obj.model_dump(), ECKey.generate_key("P-256", private=True))


def _rsa_jwk(bits: int) -> dict[str, Any]:
    n = rsa.generate_private_key(65537, bits).public_key().public_numbers().n
    return {"kty": "RSA", "e": "AQAB", "n": b64url(n.to_bytes((n.bit_length() + 7) // 8))}


def _ec(**over: Any) -> dict[str, Any]:
    return {**ECKey.generate_key("P-256").as_dict(private=False), **over}


@pytest.mark.parametrize(
    ("jwk", "match"),
    [
        ({"kty": "oct", "k": "AAAA"}, "kty"),
        (_ec(crv="P-384"), "P-256/P-521"),
        (_ec(alg="RSA1_5"), "alg"),
        (_ec(x="AAAA"), "bytes"),
        (_ec(y=None), "member"),
        (_ec(y=b64url(b"\x01" * 32)), "not a point"),
        (_rsa_jwk(1024), "2048"),
        ({**RSAKey.generate_key(2048).as_dict(private=False), "alg": "RSA-OAEP"}, "RSA-OAEP-256"),
    ],
)
def test_kbs_jwe_refuses_unusable_tee_keys(jwk: dict[str, Any], match: str) -> None:
    with pytest.raises(TeePubkeyInvalid, match=match):
        import_tee_pubkey(jwk)


def test_kbs_jwe_thumbprint_is_rfc7638() -> None:
    # RFC 7638 §3.1 example key and its thumbprint
    jwk = {
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXj"
             "BZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJ"
             "ZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIq"
             "bw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    # Members outside the required set do not change it.
    assert jwk_thumbprint({k: v for k, v in jwk.items() if k in ("kty", "e", "n")}) == jwk_thumbprint(jwk)


@pytest.mark.parametrize("make", [lambda: ECKey.generate_key("P-256", private=True),
                                  lambda: ECKey.generate_key("P-521", private=True),
                                  lambda: RSAKey.generate_key(2048, private=True)], ids=["P-256", "P-521", "RSA"])
def test_kbs_jwe_decrypt_resource_opens_what_joserfc_opens(make: Any) -> None:
    # The client's decryptor against the KBS's encryptor, with joserfc reading the same object:
    # both must agree on the plaintext; and public_jwk is the JWK joserfc derives.
    key = make()
    jwk = dict(key.as_dict(private=False))
    assert {k: v for k, v in public_jwk(_private(key)).items() if k != "alg"} == jwk
    obj = encrypt_resource(b"image key", import_tee_pubkey(jwk)).model_dump()
    assert decrypt_resource(obj, _private(key)) == _decrypt(obj, key) == b"image key"


def test_kbs_jwe_decrypt_resource_refuses_other_keys_and_headers() -> None:
    key = ECKey.generate_key("P-256", private=True)
    obj = encrypt_resource(b"secret", import_tee_pubkey(key.as_dict(private=False))).model_dump()
    with pytest.raises(ValueError, match="does not open"):
        decrypt_resource(obj, _private(ECKey.generate_key("P-256", private=True)))
    with pytest.raises(ValueError, match="another curve"):
        decrypt_resource(obj, _private(ECKey.generate_key("P-521", private=True)))
    with pytest.raises(ValueError, match="does not fit"):
        decrypt_resource(obj, rsa.generate_private_key(65537, 2048))
    head = header(obj)
    for changed in ({**head, "enc": "A128GCM"}, {**head, "alg": "dir"}, {**head, "epk": {**head["epk"], "x": "AA"}}):
        forged = {**obj, "protected": b64url(json.dumps(changed).encode())}
        with pytest.raises(ValueError):
            decrypt_resource(forged, _private(key))
    with pytest.raises(jose.JweMalformed, match="'iv' is missing"):
        decrypt_resource({"protected": obj["protected"]}, _private(key))


DEEP = "[" * 100_000 + "]" * 100_000
"""JSON nested beyond json's recursion limit (found by tests/fuzz: RecursionError escaped)."""


def test_protected_header_nested_too_deeply_is_malformed() -> None:
    key = ECKey.generate_key("P-256")
    doc = dict(encrypt_resource(b"secret", _private(key).public_key()).model_dump())
    doc["protected"] = b64url(DEEP.encode())
    with pytest.raises(jose.JweMalformed, match="protected header is not base64url JSON"):
        jose.decrypt(doc, _private(key))


def test_resource_answer_nested_too_deeply_is_a_client_error() -> None:
    session = KbsSession("http://127.0.0.1:9", cast(Any, None), workload_id="w", tee="snp")
    with pytest.raises(KbsClientError, match="does not decrypt"):
        session.decrypt(DEEP.encode())
