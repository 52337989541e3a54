"""The hand-written fast paths of ccpipe.crypto.jose agree with joserfc."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, RSAKey, thumbprint

from ccpipe.crypto import jose


def test_es256_token_is_what_joserfc_writes_and_reads() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {"iss": "ccpipe-kbs", "exp": 2**40, "big": 2**70, "text": "é", "nested": {"a": [1, None, True]}}
    token = jose.sign_es256_jwt(claims, key)
    header, payload, _ = token.split(".")
    theirs = jwt.encode({"alg": "ES256", "typ": "JWT"}, claims, ECKey.import_key(key))
    assert json.loads(jose.b64url_decode(header)) == json.loads(jose.b64url_decode(theirs.split(".")[0]))
    assert json.loads(jose.b64url_decode(payload)) == claims
    assert dict(jwt.decode(token, ECKey.import_key(key.public_key()), algorithms=["ES256"]).claims) == claims
    assert jose.verify_jwt(theirs, ECKey.import_key(key.public_key()), ["ES256"]) == claims


@pytest.mark.parametrize("make", [lambda: ECKey.generate_key("P-256", private=True),
                                  lambda: ECKey.generate_key("P-521", private=True),
                                  lambda: RSAKey.generate_key(2048, private=True)], ids=["P-256", "P-521", "RSA"])
def test_thumbprint_and_flattened_jwe_match_joserfc(make: object) -> None:
    key = make()  # type: ignore[operator]
    jwk = dict(key.as_dict(private=False))
    assert jose.jwk_thumbprint(jwk) == thumbprint(jwk)
    sealed = jose.encrypt_flattened(b"resource", jose.import_public_jwk(jwk))
    compact = ".".join(sealed[m] for m in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))
    algorithms = [jose.EC_ALG, jose.RSA_OAEP_256, jose.CONTENT_ENC]
    assert jwe.decrypt_compact(compact, key, algorithms=algorithms).plaintext == b"resource"
    assert jwe.decrypt_json(sealed, key, algorithms=algorithms).plaintext == b"resource"  # type: ignore[arg-type]


def test_decrypt_authenticates_the_transmitted_protected_header() -> None:
    # The AAD is the header string as sent: the same header serialised otherwise does not open.
    key = ec.generate_private_key(ec.SECP256R1())
    doc = jose.encrypt_flattened(b"spaced", key.public_key())
    spaced = json.dumps(json.loads(jose.b64url_decode(doc["protected"])), indent=1).encode()
    assert jose.decrypt(doc, key) == b"spaced"
    with pytest.raises(jose.JweNotForKey):
        jose.decrypt({**doc, "protected": jose.b64url(spaced)}, key)


@pytest.mark.parametrize("curves", [("P-256", "P-256"), ("P-256", "P-384", "P-521")], ids=["two", "mixed"])
def test_the_general_ec_jwe_opens_with_joserfc_for_every_recipient_in_encrypt_generals_layout(
        curves: tuple[str, ...]) -> None:
    keys = [ec.generate_private_key(jose.CURVES[c]) for c in curves]
    doc = jose.encrypt_general_ec(b"content key", [k.public_key() for k in keys])
    theirs = jose.encrypt_general(b"content key", [k.public_key() for k in keys])
    assert sorted(doc) == sorted(theirs) and json.loads(jose.b64url_decode(doc["protected"])) == {"enc": "A256GCM"}
    assert [sorted(r["header"]) for r in doc["recipients"]] == [sorted(r["header"]) for r in theirs["recipients"]]
    for key in keys:
        assert jose.decrypt(doc, key, algorithms=(jose.EC_ALG, jose.CONTENT_ENC)) == b"content key"
        opened = jwe.decrypt_json(cast(Any, dict(doc)), ECKey.import_key(key),
                                  registry=jwe.JWERegistry(verify_all_recipients=False))
        assert opened.plaintext == b"content key"
    with pytest.raises(jose.JweNotForKey):
        jose.decrypt(doc, ec.generate_private_key(ec.SECP256R1()), algorithms=(jose.EC_ALG, jose.CONTENT_ENC))
    doc["recipients"][0]["encrypted_key"] = jose.b64url(bytes(40))
    with pytest.raises(jose.JweNotForKey):
        jose.decrypt(doc, keys[0], algorithms=(jose.EC_ALG, jose.CONTENT_ENC))


def test_the_general_ec_jwe_takes_only_ec_recipients() -> None:
    with pytest.raises(jose.JoseInvalid):
        jose.encrypt_general_ec(b"x", [])
    rsa_key = RSAKey.generate_key(2048, private=True).get_op_key("encrypt")
    with pytest.raises(jose.JwkInvalid):
        jose.encrypt_general_ec(b"x", [rsa_key])  # type: ignore[list-item]


def test_importing_jose_loads_no_joserfc() -> None:
    import subprocess
    import sys

    code = ("import sys, ccpipe.crypto.jose; "
            "print(sorted(m for m in sys.modules if m.startswith(('joserfc', 'cryptography.x509'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_a_flattened_ec_jwe_joserfc_wrote_opens_without_joserfc(curve: str) -> None:
    # joserfc's compact JWE carries every header protected, as the KBS's answer does: laid out as a
    # flattened JSON JWE it takes the primitives path, which must open what joserfc sealed
    key = ECKey.generate_key(curve, private=True)
    compact = jwe.encrypt_compact({"alg": jose.EC_ALG, "enc": jose.CONTENT_ENC}, b"image key", key,
                                  algorithms=[jose.EC_ALG, jose.CONTENT_ENC])
    doc = dict(zip(("protected", "encrypted_key", "iv", "ciphertext", "tag"), compact.split("."), strict=True))
    private = key.get_op_key("unwrapKey")
    assert jose.decrypt(doc, private) == b"image key"
    with pytest.raises(jose.JweNotForKey):
        jose.decrypt(doc, ec.generate_private_key(private.curve))  # another key on the same curve
    for member, size in (("iv", 16), ("tag", 12)):  # A256GCM wants a 96-bit IV and a 128-bit tag
        with pytest.raises(jose.JweMalformed, match="wrong length"):
            jose.decrypt({**doc, member: jose.b64url(bytes(size))}, private)
    with pytest.raises(jose.JweMalformed, match="base64url"):
        jose.decrypt({**doc, "ciphertext": "not*base64"}, private)


def test_a_guest_opens_the_kbs_answer_without_loading_joserfc() -> None:
    # joserfc's key objects were three quarters of a guest's JWE time: the common answer must not need them
    import subprocess
    import sys

    code = ("import sys\nfrom cryptography.hazmat.primitives.asymmetric import ec\nfrom ccpipe.crypto import jose\n"
            "key = ec.generate_private_key(ec.SECP256R1())\n"
            "assert jose.decrypt(jose.encrypt_flattened(b'k', key.public_key()), key) == b'k'\n"
            "print(sorted(m for m in sys.modules if m.startswith('joserfc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
