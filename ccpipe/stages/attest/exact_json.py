"""JSON decoding with the standard library's result, at orjson's speed where the two agree.

Evidence and RCAR bodies are mostly arrays of byte values (~18 KiB for SEV-SNP with its
certificate table); orjson decodes them several times faster than :func:`json.loads`. It is used
only where it gives json's value: it refuses (and json then decides) NaN, infinities, lone
surrogates, a BOM, other encodings and nesting beyond 1024 levels; and as it turns integers
beyond 64 bits into floats, any text holding a run of 19 digits goes to json as well. (One
difference remains: nesting just under 1024 levels, where json may already hit the recursion
limit, decodes — callers then refuse the shape.) Deeper nesting is
:class:`~ccpipe.schemas.json_input.JsonTooDeep`, a ``ValueError``, never a ``RecursionError``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccpipe.schemas.json_input import load_json

_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def loads_exact(data: bytes) -> Any:
    """``json.loads(data)``: the same value, or the same ``ValueError`` subclass (with
    :class:`~ccpipe.schemas.json_input.JsonTooDeep` for nesting beyond the recursion limit)."""
    if isinstance(data, bytes) and _LONG_NUMBER not in data.translate(_DIGITS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return load_json(data)
