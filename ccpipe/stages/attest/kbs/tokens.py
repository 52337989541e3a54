"""The attestation token: EAR claims in an ES256 JWT signed by the KBS's token key.

Trustee's token body (``eat_profile``, ``iat``/``exp``, ``submods.cpu0`` with ``ear.status``,
``ear.trustworthiness-vector``, ``ear.appraisal-policy-id`` and
``ear.veraison.annotated-evidence`` holding the TEE claims and ``runtime_data_claims`` with the
``tee-pubkey``), plus ``jti`` and a ``ccpipe`` member (workload, evidence digest, backend) so a
Bearer token alone says what it was issued for. The key (P-256) lives in
``<data_dir>/keys/kbs/token.key`` (0600, created on first use), so replicas sharing the data
directory accept each other's tokens.
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
from ccpipe.pipeline.keyfiles import load_or_create_private_file
from ccpipe.stages.attest.kbs.errors import TokenInvalid

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "ccpipe-kbs"
RUNTIME_DATA_PATH = ("submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims", "tee-pubkey")


def load_or_create_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from ``path`` (PEM, PKCS#8), created 0600 if absent."""
    def fresh() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    loaded = serialization.load_pem_private_key(load_or_create_private_file(path, fresh), password=None)
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
        """The broker whose key is ``<data_dir>/keys/kbs/token.key``."""
        return cls(load_or_create_ec_key(data_dir / "keys" / "kbs" / "token.key"), lifetime_s=lifetime_s)

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
