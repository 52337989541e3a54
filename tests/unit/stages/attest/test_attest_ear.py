"""EAR tokens: Trustee's profile, ES256, status tiers; forged, tampered and expired tokens fail."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from joserfc import jwt

from ccpipe.stages.attest.ear import EAT_PROFILE, EarSigner, ear_status, make_ear_claims, sign_ear, tier, verify_ear
from ccpipe.stages.attest.errors import EarTokenInvalid

VECTOR = {"executables": 3, "hardware": 2, "configuration": 2}


def _token(signer: EarSigner, **kw: int) -> str:
    submod = {"ear.status": ear_status(VECTOR), "ear.trustworthiness-vector": VECTOR}
    return sign_ear(make_ear_claims({"cpu0": submod}, jti="j1", **kw), signer)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_round_trip_has_trustees_profile_and_es256_header() -> None:
    signer = EarSigner.generate()
    token = _token(signer)
    header = json.loads(_b64(token.split(".")[0]))
    assert header["alg"] == "ES256" and header["jwk"]["crv"] == "P-256" and header["kid"] == signer.kid
    claims = verify_ear(token, signer)
    assert claims["eat_profile"] == EAT_PROFILE
    assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
    assert claims["exp"] - claims["iat"] == 300
    assert verify_ear(token, signer.public_jwk())["jti"] == "j1"  # a JWK is enough to verify


def test_wrong_key_fails() -> None:
    token = _token(EarSigner.generate())
    with pytest.raises(EarTokenInvalid):
        verify_ear(token, EarSigner.generate())


def test_tampered_payload_fails() -> None:
    signer = EarSigner.generate()
    head, body, sig = _token(signer).split(".")
    claims = json.loads(_b64(body))
    claims["submods"]["cpu0"]["ear.status"] = "affirming"
    claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["executables"] = 2
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(EarTokenInvalid):
        verify_ear(f"{head}.{forged}.{sig}", signer)


def test_a_token_carrying_its_own_key_in_the_header_is_not_trusted() -> None:
    trusted, attacker = EarSigner.generate(), EarSigner.generate()
    token = _token(attacker)  # the header jwk is the attacker's key, and the signature matches it
    with pytest.raises(EarTokenInvalid):
        verify_ear(token, trusted)


def test_expired_token_fails() -> None:
    signer = EarSigner.generate()
    token = _token(signer, now=int(time.time()) - 3600)
    with pytest.raises(EarTokenInvalid, match="expired"):
        verify_ear(token, signer)


def test_alg_none_and_other_profiles_are_refused() -> None:
    signer = EarSigner.generate()
    body = {"eat_profile": "other", "iat": 1, "exp": 2**40, "submods": {"a": {}}}
    other = jwt.encode({"alg": "ES256"}, body, signer.key)
    with pytest.raises(EarTokenInvalid, match="eat_profile"):
        verify_ear(other, signer)
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    payload = _token(signer).split(".")[1]
    with pytest.raises(EarTokenInvalid):
        verify_ear(f"{head}.{payload}.", signer)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "none"), (1, "none"), (2, "affirming"), (31, "affirming"), (32, "warning"), (33, "warning"),
     (95, "warning"), (96, "contraindicated"), (97, "contraindicated"), (-2, "affirming"), (-97, "contraindicated")],
)
def test_tiers_follow_ar4si(value: int, expected: str) -> None:
    assert tier(value) == expected


def test_status_is_the_worst_tier() -> None:
    assert ear_status({"a": 2, "b": 0}) == "affirming"
    assert ear_status({"a": 2, "b": 33}) == "warning"
    assert ear_status({"a": 2, "b": 33, "c": 97}) == "contraindicated"
    assert ear_status({"a": 0}) == "none"


def test_signing_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = EarSigner.load_or_create(tmp_path / "keys")
    second = EarSigner.load_or_create(tmp_path / "keys")
    assert first.kid == second.kid
    assert os.stat(tmp_path / "keys" / "ear-signing.pem").st_mode & 0o077 == 0
    assert verify_ear(_token(first), second)["jti"] == "j1"
