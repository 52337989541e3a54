"""Admin JWTs (EdDSA + role ACLs) and the KBS attestation token (ES256)."""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from ccpipe.pipeline.event_signature import ComponentKey
from ccpipe.stages.attest.kbs.admin_auth import (
    SIGN_STAGE_ROLE,
    AdminAuthenticator,
    admin_key_paths,
    enrolled_sign_keys,
    ensure_admin_keypair,
    load_admin_private_key,
    mint_admin_token,
)
from ccpipe.stages.attest.kbs.errors import AdminAuthFailed, TokenInvalid
from ccpipe.stages.attest.kbs.tokens import TokenBroker, tee_pubkey_of


def test_kbs_admin_keypair_created_once_private_key_0600(tmp_path: Path) -> None:
    pub = ensure_admin_keypair(tmp_path)
    priv_path, _ = admin_key_paths(tmp_path)
    assert priv_path.stat().st_mode & 0o777 == 0o600
    assert ensure_admin_keypair(tmp_path).public_bytes_raw() == pub.public_bytes_raw()
    assert load_admin_private_key(priv_path).public_key().public_bytes_raw() == pub.public_bytes_raw()


@pytest.mark.parametrize(
    ("role", "path", "allowed"),
    [
        ("admin", "/kbs/v0/resource/ccpipe/wl/image-key", True),
        ("admin", "/kbs/v0/resource-policy", True),
        ("resource-writer", "/kbs/v0/resource/ccpipe/wl/image-key", True),
        ("resource-writer", "/kbs/v0/resource-policy", False),
        ("resource-writer", "/kbs/v0/reference-value", False),
        ("policy-admin", "/kbs/v0/reference-value", True),
        ("policy-admin", "/kbs/v0/attestation-policy", True),
        ("policy-admin", "/kbs/v0/resource/ccpipe/wl/image-key", False),
        ("root", "/kbs/v0/resource/a/b/c", False),
    ],
)
def test_kbs_admin_roles(role: str, path: str, allowed: bool) -> None:
    key = Ed25519PrivateKey.generate()
    auth = AdminAuthenticator(key.public_key())
    header = "Bearer " + mint_admin_token(key, role)
    if allowed:
        assert auth.authorize(header, path)["role"] == role
    else:
        with pytest.raises(AdminAuthFailed, match="may not use"):
            auth.authorize(header, path)


def test_kbs_admin_refuses_forged_expired_and_missing_tokens() -> None:
    key = Ed25519PrivateKey.generate()
    auth = AdminAuthenticator(key.public_key())
    path = "/kbs/v0/resource/a/b/c"
    with pytest.raises(AdminAuthFailed, match="Bearer"):
        auth.authorize(None, path)
    with pytest.raises(AdminAuthFailed, match="does not verify"):
        auth.authorize("Bearer " + mint_admin_token(Ed25519PrivateKey.generate(), "admin"), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags the "EdDSA" name; Trustee uses it
        expired = jwt.encode({"alg": "EdDSA"}, {"role": "admin", "exp": int(time.time()) - 1},
                             OKPKey.import_key(key), algorithms=["EdDSA"])
    with pytest.raises(AdminAuthFailed, match="expired"):
        auth.authorize("Bearer " + expired, path)
    # alg confusion: an ES256 token is not accepted even with a valid-looking role
    es = jwt.encode({"alg": "ES256"}, {"role": "admin", "exp": int(time.time()) + 60},
                    ECKey.generate_key("P-256", private=True), algorithms=["ES256"])
    with pytest.raises(AdminAuthFailed):
        auth.authorize("Bearer " + es, path)
    token = mint_admin_token(key, "admin")
    head, body, sig = token.split(".")
    with pytest.raises(AdminAuthFailed):
        auth.authorize(f"Bearer {head}.{body}.{sig[:-4]}AAAA", path)


def _claims() -> tuple[dict[str, Any], dict[str, Any]]:
    jwk: dict[str, Any] = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}
    annotated = {"runtime_data_claims": {"tee-pubkey": jwk}}
    submod: dict[str, Any] = {"ear.status": "affirming", "ear.veraison.annotated-evidence": annotated}
    return submod, jwk


def test_kbs_token_round_trip_and_tee_pubkey_path(tmp_path: Path) -> None:
    broker = TokenBroker.for_data_dir(tmp_path)
    submod, jwk = _claims()
    token, _ = broker.issue(submod, {"workload_id": "wl"}, jti="abc")
    verified = broker.verify(token)
    assert verified["jti"] == "abc" and verified["ccpipe"] == {"workload_id": "wl"}
    assert verified["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert tee_pubkey_of(verified) == jwk
    assert (tmp_path / "keys" / "kbs" / "token.key").stat().st_mode & 0o777 == 0o600
    assert TokenBroker.for_data_dir(tmp_path).verify(token)["jti"] == "abc"  # another replica, same key


def test_kbs_token_forged_expired_or_foreign_is_refused(tmp_path: Path) -> None:
    broker = TokenBroker.for_data_dir(tmp_path)
    submod, _ = _claims()
    other = TokenBroker.for_data_dir(tmp_path / "other")
    forged, _ = other.issue(submod, {"workload_id": "wl"})
    with pytest.raises(TokenInvalid, match="does not verify"):
        broker.verify(forged)
    short = TokenBroker.for_data_dir(tmp_path, lifetime_s=-1)
    expired, _ = short.issue(submod, {})
    with pytest.raises(TokenInvalid, match="expired"):
        broker.verify(expired)
    token, _ = broker.issue(submod, {"workload_id": "wl"})
    head, body, sig = token.split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["ccpipe"]["workload_id"] = "another"
    body2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        broker.verify(f"{head}.{body2}.{sig}")
    with pytest.raises(TokenInvalid, match="no tee-pubkey"):
        tee_pubkey_of({"submods": {}})


def _enrolled_lookup(tmp_path: Path) -> tuple[ComponentKey, ComponentKey, ComponentKey, Path]:
    """A data directory with an admin key pinned whose keyring holds the enrolled keys: sign, build, revoked sign."""
    from ccpipe.pipeline.enrolment import init_admin
    from ccpipe.pipeline.enrolment_bus import write_enrolled_keyring
    from ccpipe.pipeline.signing import RegisteredKey

    init_admin(tmp_path)
    sign, build, retired = (ComponentKey.generate(c) for c in ("sign", "build", "sign"))
    write_enrolled_keyring(tmp_path, [
        RegisteredKey("sign", sign.public_key, sign.key_id), RegisteredKey("build", build.public_key, build.key_id),
        RegisteredKey("sign", retired.public_key, retired.key_id, revoked_at=datetime.now(UTC))])
    return sign, build, retired, tmp_path


def test_the_enrolled_sign_key_may_register_keys_and_reference_values_and_nothing_else(tmp_path: Path) -> None:
    sign, build, retired, data_dir = _enrolled_lookup(tmp_path)
    auth = AdminAuthenticator(Ed25519PrivateKey.generate().public_key(), enrolled_sign_keys(data_dir))

    def bearer(key: ComponentKey, role: str = SIGN_STAGE_ROLE, kid: str | None = None) -> str:
        return "Bearer " + mint_admin_token(key.private_key, role, kid=kid or key.key_id)

    claims = auth.authorize(bearer(sign), "/kbs/v0/resource/ccpipe/wl-1/image-key")
    assert claims["sub"] == f"sign key {sign.key_id}"  # what kbs.admin.changed records: the verified key
    auth.authorize(bearer(sign), "/kbs/v0/reference-value")
    with pytest.raises(AdminAuthFailed, match="may not use"):
        auth.authorize(bearer(sign), "/kbs/v0/resource-policy")
    with pytest.raises(AdminAuthFailed, match="only carry the role"):
        auth.authorize(bearer(sign, "admin"), "/kbs/v0/resource-policy")
    with pytest.raises(AdminAuthFailed, match="not an enrolled key of the sign stage"):
        auth.authorize(bearer(build), "/kbs/v0/resource/ccpipe/wl-1/image-key")  # enrolled, but for build
    with pytest.raises(AdminAuthFailed, match="not an enrolled key of the sign stage"):
        auth.authorize(bearer(retired), "/kbs/v0/resource/ccpipe/wl-1/image-key")  # revoked
    with pytest.raises(AdminAuthFailed, match="does not verify"):
        auth.authorize(bearer(build, kid=sign.key_id), "/kbs/v0/resource/ccpipe/wl-1/image-key")  # kid of another


def test_a_bare_data_directory_trusts_no_component_key_for_the_admin_api(tmp_path: Path) -> None:
    from ccpipe.pipeline.signing import register_public_key

    planted = ComponentKey.generate("sign")
    register_public_key(tmp_path, planted)  # what any process could write into a shared keyring file
    assert enrolled_sign_keys(tmp_path) is None
    auth = AdminAuthenticator(Ed25519PrivateKey.generate().public_key(), enrolled_sign_keys(tmp_path))
    with pytest.raises(AdminAuthFailed, match="not an enrolled key"):
        auth.authorize("Bearer " + mint_admin_token(planted.private_key, SIGN_STAGE_ROLE, kid=planted.key_id),
                       "/kbs/v0/resource/ccpipe/wl-1/image-key")
