"""Decoding JSON that comes from outside (events, evidence, registry replies, JWE headers).

:func:`json.loads` recurses once per level of nesting, so a small document such as ``[[[[…]]]]``
100,000 levels deep raises :class:`RecursionError`, which callers that handle malformed JSON
(``ValueError``) do not expect. :func:`load_json` reports it as :class:`JsonTooDeep`, a
``ValueError``: every ``except ValueError`` around a parse then covers it. Imports nothing of
the project.
"""

from __future__ import annotations

import json
from typing import Any


class JsonTooDeep(ValueError):
    """A JSON document nests arrays/objects deeper than the interpreter can decode."""


def load_json(data: bytes | bytearray | str) -> Any:
    """``json.loads(data)``; raises ``ValueError`` for any malformed document, including
    :class:`JsonTooDeep` for one nested beyond the recursion limit (and ``UnicodeDecodeError``,
    itself a ``ValueError``, for bytes that are not UTF-8/16/32)."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise JsonTooDeep("the JSON document is nested too deeply") from exc
