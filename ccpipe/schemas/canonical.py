"""RFC 8785 (JSON Canonicalization Scheme) bytes, the one serialization that is hashed and signed.

The audit log hashes exactly these bytes and event signatures cover exactly these bytes, so
every producer and verifier must go through :func:`canonical_json`.

The ``rfc8785`` library is the reference. For the documents ccpipe publishes most — strings,
safe integers, booleans, null, with ASCII keys — ``orjson`` with sorted keys produces the same
bytes (the same escapes, ``\\u00xx`` in lower case, no escaping of non-ASCII; code-point key
order equals UTF-16 order for ASCII keys) some fifty times faster, which matters for events
carrying ~25 KiB of base64 evidence. Anything else — a float, an integer outside
±(2**53 − 1), a non-ASCII key, a lone surrogate — takes the library's path.
``tests/unit/schemas/test_canonical.py`` checks the two agree on generated documents.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

_SAFE_INT = 2**53 - 1


def _stdlib_is_canonical(value: Any) -> bool:
    """Whether orjson's sorted output for ``value`` is its RFC 8785 form."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INT <= item <= _SAFE_INT:
                continue
            return False
        if kind is dict:
            for key, sub in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(sub)
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False  # floats, tuples, subclasses of str/int (enums): the reference path
    return True


def canonical_json(value: BaseModel | Any) -> bytes:
    """RFC 8785 bytes of a pydantic model (by alias, JSON mode) or of plain JSON data.

    Raises ``rfc8785.CanonicalizationError`` for what JCS cannot represent (NaN, lone surrogates).
    """
    data: Any = value
    dump = getattr(value, "model_dump", None)  # a model, told apart without importing pydantic (``ccpipe submit``)
    if dump is not None:
        data = dump(mode="json", by_alias=True, exclude_none=True)
    if _stdlib_is_canonical(data):
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the library raises its own error for it
    import rfc8785  # the reference path, rarely taken: loaded when needed

    return rfc8785.dumps(data)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
