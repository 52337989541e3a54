"""The attestation token: EAR claims in an ES256 JWT signed by the KBS's token key.

Trustee's token body (``eat_profile``, ``iat``/``exp``, ``submods.cpu0`` with ``ear.status``,
``ear.trustworthiness-vector``, ``ear.appraisal-policy-id`` and
``ear.veraison.annotated-evidence`` holding the TEE claims and ``runtime_data_claims`` with the
``tee-pubkey``), plus ``jti`` and a ``ccpipe`` member (workload, evidence digest, backend) so a
Bearer token alone says what it was issued for. The key (P-256) is the replicas' shared
``token.key`` (:mod:`ccpipe.stages.attest.kbs.key_dir`), so every replica accepts the others' tokens.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from ccpipe.crypto import jose
from ccpipe.stages.attest.kbs.errors import TokenInvalid
from ccpipe.stages.attest.kbs.key_dir import TOKEN_KEY_FILE, load_kbs_secret

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "ccpipe-kbs"
RUNTIME_DATA_PATH = ("submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims", "tee-pubkey")


def load_token_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The replicas' P-256 token key (PEM, PKCS#8; see :mod:`ccpipe.stages.attest.kbs.key_dir`:
    created 0600 on first use in the data directory, or read from ``CCPIPE_KBS_KEYS_DIR``).

    Raises :class:`TokenInvalid` for a file that is not a P-256 private key.
    """
    path, pem = load_kbs_secret(data_dir, TOKEN_KEY_FILE)
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TokenInvalid(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TokenInvalid(f"{path} is not an EC private key")
    return loaded


class TokenBroker:
    """Issues and verifies the KBS's attestation tokens."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, lifetime_s: int = 300) -> None:
        """Sign with ``key`` (P-256); tokens expire ``lifetime_s`` after issue (Trustee: 5 min)."""
        if not isinstance(key.curve, ec.SECP256R1):
            raise TokenInvalid(f"the token key must be P-256 (ES256), not {key.curve.name}")
        self._private = key
        self._key = ECKey.import_key(key)
        self.lifetime_s = lifetime_s

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, lifetime_s: int = 300) -> TokenBroker:
        """The broker whose key is the replicas' token key (:func:`load_token_key`)."""
        return cls(load_token_key(data_dir), lifetime_s=lifetime_s)

    def issue(self, submod: dict[str, Any], ccpipe: dict[str, Any], *, jti: str | None = None
              ) -> tuple[str, dict[str, Any]]:
        """A signed token for one appraisal (``submod`` = the cpu0 appraisal); returns (JWT, claims)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "eat_profile": EAT_PROFILE,
            "iat": now,
            "exp": now + self.lifetime_s,
            "iss": ISSUER,
            "jti": jti or uuid.uuid4().hex,
            "ear.verifier-id": {"developer": "https://ccpipe.dev", "build": "ccpipe-kbs"},
            "submods": {"cpu0": submod},
            "ccpipe": ccpipe,
        }
        return jose.sign_es256_jwt(claims, self._private), claims

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this KBS issued and that has not expired.

        Raises :class:`TokenInvalid` for a bad signature, another issuer, or an expired token.
        """
        try:
            claims = jose.verify_jwt(token, self._key, ["ES256"])
        except jose.JwtInvalid as exc:
            raise TokenInvalid(f"attestation token does not verify: {exc}") from exc
        if claims.get("iss") != ISSUER:
            raise TokenInvalid("attestation token was not issued by this KBS")
        return self.check_expiry(claims)

    @staticmethod
    def check_expiry(claims: dict[str, Any]) -> dict[str, Any]:
        """``claims`` if their ``exp`` is in the future; raises :class:`TokenInvalid` otherwise."""
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise TokenInvalid("attestation token has expired")
        return claims


def tee_pubkey_of(claims: dict[str, Any]) -> dict[str, Any]:
    """The tee-pubkey JWK at Trustee's EAR path; raises :class:`TokenInvalid` if absent."""
    node: Any = claims
    for part in RUNTIME_DATA_PATH:
        if not isinstance(node, dict) or part not in node:
            raise TokenInvalid("attestation token carries no tee-pubkey")
        node = node[part]
    if not isinstance(node, dict):
        raise TokenInvalid("attestation token's tee-pubkey is not a JWK")
    return node
