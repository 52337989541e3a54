"""JWE as the sign stage uses it for ocicrypt recipients: round trips, joserfc interop, refusals."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe as joserfc_jwe
from joserfc.jwe import FlattenedJSONEncryption
from joserfc.jwk import ECKey, RSAKey

from ccpipe.crypto import jose
from ccpipe.crypto.jose import JweMalformed, JweNotForKey, JweUnsupported, JwkInvalid


def encrypt(plain: bytes, keys: list[jose.PublicKey]) -> bytes:
    """ocicrypt's layout: flattened for one recipient, general for several (RSA-OAEP for RSA)."""
    checked = [jose.check_recipient_key(k) for k in keys]
    if len(checked) == 1:
        return json.dumps(jose.encrypt_flattened(plain, checked[0], rsa_alg=jose.RSA_OAEP)).encode()
    return json.dumps(jose.encrypt_general(plain, checked)).encode()


def decrypt(data: bytes, key: jose.PrivateKey) -> bytes | None:
    try:
        return jose.decrypt(json.loads(data), key)
    except JweNotForKey:
        return None


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_ec_round_trip_and_go_jose_layout(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    data = encrypt(b"opts", [key.public_key()])
    doc = json.loads(data)
    protected = json.loads(jose.b64url_decode(doc["protected"]))
    assert protected["alg"] == "ECDH-ES+A256KW" and protected["enc"] == "A256GCM" and "epk" in protected
    assert decrypt(data, key) == b"opts"
    assert decrypt(data, ec.generate_private_key(curve)) is None


def test_multi_recipient_general_form(rsa_key: rsa.RSAPrivateKey) -> None:
    eck = ec.generate_private_key(ec.SECP256R1())
    data = encrypt(b"opts", [rsa_key.public_key(), eck.public_key()])
    doc = json.loads(data)
    assert [r["header"]["alg"] for r in doc["recipients"]] == ["RSA-OAEP", "ECDH-ES+A256KW"]
    assert decrypt(data, rsa_key) == b"opts" and decrypt(data, eck) == b"opts"
    assert decrypt(data, rsa.generate_private_key(65537, 2048)) is None


def test_joserfc_reads_ours(rsa_key: rsa.RSAPrivateKey) -> None:
    data = json.loads(encrypt(b"secret", [rsa_key.public_key()]))
    got = joserfc_jwe.decrypt_json(data, RSAKey.import_key(rsa_key), algorithms=["RSA-OAEP", "A256GCM"])
    assert got.plaintext == b"secret"


@pytest.mark.parametrize(
    ("alg", "enc", "key"),
    [
        ("RSA-OAEP-256", "A256GCM", "rsa"),
        ("RSA-OAEP", "A128CBC-HS256", "rsa"),
        ("ECDH-ES+A128KW", "A256CBC-HS512", "ec"),
        ("ECDH-ES+A192KW", "A192GCM", "ec"),
    ],
)
def test_we_read_joserfc(alg: str, enc: str, key: str, rsa_key: rsa.RSAPrivateKey) -> None:
    priv: jose.PrivateKey = rsa_key if key == "rsa" else ec.generate_private_key(ec.SECP384R1())
    jwk = (
        RSAKey.import_key(rsa_key.public_key())
        if isinstance(priv, rsa.RSAPrivateKey)
        else (ECKey.import_key(priv.public_key()))
    )
    obj = FlattenedJSONEncryption({"enc": enc}, b"from joserfc")
    obj.add_recipient({"alg": alg}, jwk)
    data = json.dumps(joserfc_jwe.encrypt_json(obj, None, algorithms=[alg, enc])).encode()
    assert decrypt(data, priv) == b"from joserfc"


def test_tampered_ciphertext_or_header_does_not_open(rsa_key: rsa.RSAPrivateKey) -> None:
    doc = json.loads(encrypt(b"opts-opts-opts", [rsa_key.public_key()]))
    ct = bytearray(jose.b64url_decode(doc["ciphertext"]))
    ct[0] ^= 1
    assert decrypt(json.dumps({**doc, "ciphertext": jose.b64url(bytes(ct))}).encode(), rsa_key) is None
    # the protected header is authenticated (it is the GCM AAD)
    hdr = jose.b64url(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "x"}).encode())
    assert decrypt(json.dumps({**doc, "protected": hdr}).encode(), rsa_key) is None


def test_compression_and_unknown_enc_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    doc = json.loads(encrypt(b"x", [rsa_key.public_key()]))
    for header in ({"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF"}, {"alg": "RSA-OAEP", "enc": "XC20P"}):
        forged = {**doc, "protected": jose.b64url(json.dumps(header).encode())}
        with pytest.raises(JweUnsupported):
            decrypt(json.dumps(forged).encode(), rsa_key)


def test_weak_or_foreign_recipients_are_refused() -> None:
    with pytest.raises(JwkInvalid, match="2048"):
        encrypt(b"x", [rsa.generate_private_key(65537, 1024).public_key()])
    with pytest.raises(jose.JoseInvalid, match="at least one"):
        jose.encrypt_general(b"x", [])


def test_epk_off_the_curve_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    doc = json.loads(encrypt(b"x", [key.public_key()]))
    header = json.loads(jose.b64url_decode(doc["protected"]))
    header["epk"]["y"] = jose.b64url((1).to_bytes(32, "big"))
    forged = {**doc, "protected": jose.b64url(json.dumps(header).encode())}
    with pytest.raises(JweMalformed, match="curve"):
        decrypt(json.dumps(forged).encode(), key)


@pytest.mark.parametrize("patch", [{"unprotected": "x"}, {"recipients": "x"}, {"protected": 5}, {"iv": 7}])
def test_malformed_jwe_members_are_metadata_errors(rsa_key: rsa.RSAPrivateKey, patch: dict[str, object]) -> None:
    doc = {**json.loads(encrypt(b"x", [rsa_key.public_key()])), **patch}
    with pytest.raises(JweMalformed):
        decrypt(json.dumps(doc).encode(), rsa_key)
