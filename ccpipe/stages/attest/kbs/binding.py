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

from ccpipe.schemas.canonical import canonical_json

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
