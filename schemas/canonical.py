"""RFC 8785 (JSON Canonicalization Scheme) bytes, the one serialization that is hashed and signed.

The audit log hashes exactly these bytes and event signatures cover exactly these bytes, so
every producer and verifier must go through :func:`canonical_json`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from pydantic import BaseModel


def canonical_json(value: BaseModel | Any) -> bytes:
    """RFC 8785 bytes of a pydantic model (by alias, JSON mode) or of plain JSON data."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
