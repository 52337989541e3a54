"""The report_data binding of RCAR: what the evidence must carry for a challenge and a key.

Guest and KBS compute ``HASH(JCS({"tee-pubkey": JWK, "nonce": nonce, "additional-evidence": s}))``
(RFC 8785 canonical JSON; SHA-384 unless the challenge selects another hash; SHA-512 for IBM SE),
so evidence made for one challenge or one key cannot be used with another. The
``additional-evidence`` member is always present (empty string without devices). Each device's
evidence carries ``HASH(JCS({"tee-pubkey": JWK, "nonce": nonce}))`` (:func:`device_data_digest`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ccpipe.crypto import jose
from ccpipe.schemas.canonical import canonical_json
from ccpipe.stages.attest.kbs.errors import TeePubkeyInvalid

HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
DEFAULT_HASH = "sha384"


def runtime_data(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str = "") -> dict[str, Any]:
    """The primary runtime data object that is hashed into report_data."""
    return {"tee-pubkey": tee_pubkey, "nonce": nonce, "additional-evidence": additional_evidence}


def runtime_data_digest(
    nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str = "", *, hash_alg: str = DEFAULT_HASH
) -> bytes:
    """``HASH(JCS(runtime_data(...)))``: the expected report_data (48 bytes for SHA-384).

    Raises ``KeyError`` for an unknown ``hash_alg`` (callers pass only :data:`HASHES` keys).
    """
    return HASHES[hash_alg](canonical_json(runtime_data(nonce, tee_pubkey, additional_evidence))).digest()


def device_data_digest(nonce: str, tee_pubkey: dict[str, Any], *, hash_alg: str = DEFAULT_HASH) -> bytes:
    """``HASH(JCS({"tee-pubkey", "nonce"}))``: the report_data every device's evidence must carry.

    Raises ``KeyError`` for an unknown ``hash_alg``.
    """
    return HASHES[hash_alg](canonical_json({"tee-pubkey": tee_pubkey, "nonce": nonce})).digest()


TEE_KEY_CURVES = ("P-256", "P-521")
"""The curves of EC tee-pubkeys Trustee accepts."""
TEE_KEY_ALGS = {"EC": jose.EC_ALG, "RSA": jose.RSA_OAEP_256}
"""The JWE key management the KBS uses for each kind of tee-pubkey (the JWK's ``alg``, if any, must say it)."""


def import_tee_pubkey(jwk: dict[str, Any]) -> jose.PublicKey:
    """The public key of a tee-pubkey JWK: EC P-256/P-521 for ECDH-ES+A256KW or RSA (≥ 2048 bits) for RSA-OAEP-256.

    Raises :class:`TeePubkeyInvalid` for anything else (including a point not on the curve).
    """
    try:
        return jose.import_public_jwk(jwk, curves=TEE_KEY_CURVES, algs=TEE_KEY_ALGS)
    except jose.JwkInvalid as exc:
        raise TeePubkeyInvalid(f"tee-pubkey: {exc}") from exc


def tee_pubkey_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of a tee-pubkey; raises :class:`TeePubkeyInvalid` when members are missing."""
    try:
        return jose.jwk_thumbprint(jwk)
    except jose.JwkInvalid as exc:
        raise TeePubkeyInvalid(f"tee-pubkey: {exc}") from exc
