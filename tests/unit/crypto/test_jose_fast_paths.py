"""The hand-written fast paths of ccpipe.crypto.jose agree with joserfc."""

from __future__ import annotations

import json

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
