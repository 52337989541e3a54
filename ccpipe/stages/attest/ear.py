"""EAR attestation results (EAT Attestation Result, draft-fv-rats-ear) as Trustee issues them.

A token is a compact JWS, ``alg`` ES256, whose header carries the signer's public ``jwk`` and
its RFC 7638 thumbprint as ``kid``. The body follows Trustee's profile so a KBS or a guest that
understands Trustee tokens reads ours::

    {"eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
     "iat": …, "exp": …, "iss": "ccpipe-attestation-service", "jti": "<evidence digest>",
     "ear.verifier-id": {"developer": …, "build": …},
     "submods": {"cpu0": {"ear.status": "affirming",
                          "ear.trustworthiness-vector": {"executables": 3, …},
                          "ear.appraisal-policy-id": "default",
                          "ear.veraison.annotated-evidence": {"<tee>": claims, "report_data", "init_data",
                                                              "runtime_data_claims", …},
                          "ear.veraison.policy-claims": {"policy_digest": …, …}}}}

``ear.status`` is the worst tier of the trustworthiness vector (AR4SI): a claim in [-1, 1] is
``none``, in [-32, 31] ``affirming``, in [-96, 95] ``warning``, anything else ``contraindicated``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ccpipe.crypto import jose
from ccpipe.pipeline.keyfiles import create_private_file
from ccpipe.stages.attest.errors import AttestationConfigError, EarTokenInvalid

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "ccpipe-attestation-service"
VERIFIER_ID = {"developer": "https://github.com/ccpipe", "build": "ccpipe-attest 1"}
DEFAULT_TTL_S = 300
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
_STATUS_ORDER = ("none", "affirming", "warning", "contraindicated")


def tier(value: int) -> str:
    """The AR4SI tier of one trust claim value (none, affirming, warning, contraindicated)."""
    if -1 <= value <= 1:
        return "none"
    if -32 <= value <= 31:
        return "affirming"
    if -96 <= value <= 95:
        return "warning"
    return "contraindicated"


def ear_status(vector: Mapping[str, int]) -> str:
    """The appraisal status: the worst tier of ``vector`` (``none`` if every claim is none)."""
    worst = 0
    for value in vector.values():
        worst = max(worst, _STATUS_ORDER.index(tier(int(value))))
    return _STATUS_ORDER[worst]


class EarSigner:
    """An ES256 (P-256) signing key for EAR tokens."""

    def __init__(self, key: ECKey) -> None:
        """Wrap a private P-256 ``key``; raises :class:`AttestationConfigError` for any other key."""
        if key.curve_name != "P-256" or not key.is_private:
            raise AttestationConfigError("the EAR signing key must be a private P-256 key (ES256)")
        self.key = key
        self.kid = key.thumbprint()

    @classmethod
    def generate(cls) -> EarSigner:
        """A fresh random key (tests, ephemeral services)."""
        return cls(ECKey.generate_key("P-256"))

    @classmethod
    def load_or_create(cls, directory: Path) -> EarSigner:
        """The key in ``<directory>/ear-signing.pem``, created (mode 0600) on first use.

        Raises :class:`AttestationConfigError` when the file cannot be read, written or parsed.
        """
        path = Path(directory) / "ear-signing.pem"
        try:
            if not path.exists():
                # If another process wins the race to create it, its key is kept.
                create_private_file(path, ECKey.generate_key("P-256").as_pem(private=True))
            return cls(ECKey.import_key(path.read_bytes()))
        except (OSError, ValueError, JoseError) as exc:
            raise AttestationConfigError(f"cannot load or create the EAR signing key {path}: {exc}") from exc

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK (with ``alg`` ES256 and ``kid``)."""
        data: dict[str, Any] = dict(self.key.as_dict(private=False))
        return {**data, "alg": "ES256", "kid": self.kid}


def make_ear_claims(
    submods: Mapping[str, Mapping[str, Any]],
    *,
    jti: str,
    now: int | None = None,
    ttl_s: int = DEFAULT_TTL_S,
) -> dict[str, Any]:
    """The body of an EAR token with the given appraisals (``{"cpu0": {...}}``)."""
    iat = int(time.time()) if now is None else now
    return {
        "eat_profile": EAT_PROFILE,
        "iat": iat,
        "exp": iat + ttl_s,
        "iss": ISSUER,
        "jti": jti,
        "ear.verifier-id": dict(VERIFIER_ID),
        "submods": {k: dict(v) for k, v in submods.items()},
    }


def sign_ear(claims: Mapping[str, Any], signer: EarSigner) -> str:
    """The compact ES256 JWS of ``claims``, the signer's public JWK and ``kid`` in the header."""
    header = {"alg": "ES256", "typ": "JWT", "kid": signer.kid, "jwk": signer.public_jwk()}
    return jose.sign_jwt(header, claims, signer.key)


def _public(key: EarSigner | ECKey | Mapping[str, Any]) -> ECKey:
    if isinstance(key, EarSigner):
        return ECKey.import_key(key.key.as_dict(private=False))
    if isinstance(key, ECKey):
        return key
    try:
        return ECKey.import_key(dict(key))
    except (JoseError, ValueError, TypeError) as exc:
        raise EarTokenInvalid("the trusted EAR key is not an EC JWK") from exc


def verify_ear(
    token: str, trusted: EarSigner | ECKey | Mapping[str, Any], *, now: int | None = None, leeway_s: int = 5
) -> dict[str, Any]:
    """The claims of ``token`` after checking it against the ``trusted`` key.

    The key in the token header is ignored (anyone can put a key there); only ``trusted``
    counts. Checks: ES256, signature, ``eat_profile``, ``iat``/``exp`` at ``now`` (± leeway),
    and a ``submods`` object. Raises :class:`EarTokenInvalid` naming the failed check.
    """
    key = _public(trusted)
    try:
        claims = jose.verify_jwt(token, key, ["ES256"])
    except jose.JwtInvalid as exc:
        raise EarTokenInvalid(f"the EAR token does not verify with the trusted key: {exc}") from exc
    if claims.get("eat_profile") != EAT_PROFILE:
        raise EarTokenInvalid(f"the EAR token's eat_profile is {claims.get('eat_profile')!r}, not {EAT_PROFILE!r}")
    t = int(time.time()) if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise EarTokenInvalid("the EAR token lacks integer iat/exp claims")
    if exp + leeway_s < t:
        raise EarTokenInvalid(f"the EAR token expired {t - exp} s ago")
    if iat - leeway_s > t:
        raise EarTokenInvalid("the EAR token is issued in the future")
    if not isinstance(claims.get("submods"), dict) or not claims["submods"]:
        raise EarTokenInvalid("the EAR token has no appraisal (submods)")
    return claims


__all__ = [
    "EAT_PROFILE",
    "TRUST_CLAIMS",
    "EarSigner",
    "ear_status",
    "make_ear_claims",
    "sign_ear",
    "tier",
    "verify_ear",
]
