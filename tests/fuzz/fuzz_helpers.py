"""What every fuzz target shares: the example budget, the parser contract, and input strategies.

Budget: :func:`fuzz_settings` gives a small, derandomized number of examples in the normal suite
(the whole ``tests/fuzz`` directory stays well under a minute) and a long random run when
``CCPIPE_FUZZ_EXAMPLES`` is set, e.g. ``CCPIPE_FUZZ_EXAMPLES=20000 pytest -m fuzz tests/fuzz``.

Contract: :func:`parses_or_refuses` calls a parser and lets only its documented error family
through; anything else (``ValueError``, ``KeyError``, ``struct.error``, ``RecursionError``…)
fails the example and Hypothesis shrinks it to a minimal input.

Strategies: random bytes alone rarely get past a parser's first length or magic check, so each
target also mutates a valid seed: :func:`byte_mutations` edits bytes (flip, overwrite, insert,
delete, truncate, repeat a slice), :func:`json_mutations` replaces one node of a decoded JSON
document with another JSON value or a deeply nested one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")

SUITE_EXAMPLES = 40
"""Examples per target in the normal suite: enough to walk the seed's mutations, bounded in time."""

DEEP = 100_000
"""A nesting depth beyond any recursion limit (json, pydantic, tomllib)."""


LONG_RUN = bool(os.environ.get("CCPIPE_FUZZ_EXAMPLES", "").strip())
"""True when ``CCPIPE_FUZZ_EXAMPLES`` asks for a long run."""

TIMEOUT_S = 0 if LONG_RUN else 180
"""pytest-timeout per target: a hang fails the suite run; a long run is bounded by its budget (0: none)."""


def example_budget(suite_default: int = SUITE_EXAMPLES) -> int:
    """Examples per target: ``CCPIPE_FUZZ_EXAMPLES`` when set (a long run), else ``suite_default``."""
    raw = os.environ.get("CCPIPE_FUZZ_EXAMPLES", "")
    return int(raw) if raw.strip() else suite_default


def fuzz_settings(suite_default: int = SUITE_EXAMPLES, deadline_ms: int = 2000) -> settings:
    """Hypothesis settings of one fuzz target.

    In the suite the run is derandomized (the same examples every time: a CI failure is a real
    finding, not luck) and uses no example database; a long run is random. The deadline flags
    an example that takes far longer than parsing should (a near-hang), generous for a shared
    machine; a real hang is stopped by the test's ``pytest.mark.timeout``.
    """
    return settings(
        max_examples=example_budget(suite_default),
        deadline=deadline_ms,
        derandomize=not LONG_RUN,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


Errors = type[BaseException] | tuple[type[BaseException], ...]


def parses_or_refuses(parse: Callable[[T], object], data: T, allowed: Errors) -> None:
    """Call ``parse(data)``: a value or one of ``allowed`` is the contract; any other exception
    propagates and fails the example."""
    with contextlib.suppress(*(allowed if isinstance(allowed, tuple) else (allowed,))):
        parse(data)


# --- bytes ---------------------------------------------------------------------------------------


@st.composite
def _edit(draw: st.DrawFn, data: bytes) -> bytes:
    """One random edit of ``data``."""
    if not data:
        return draw(st.binary(max_size=64))
    size = len(data)
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat", "int"]))
    at = draw(st.integers(0, size - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if kind == "set":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at + 8 :]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    if kind == "truncate":
        return data[:at]
    if kind == "repeat":
        end = min(size, at + draw(st.integers(1, 256)))
        return data[:end] + data[at:end] * draw(st.integers(1, 4)) + data[end:]
    # an interesting little-endian integer (a length or offset field) over 1, 2 or 4 bytes
    width = draw(st.sampled_from([1, 2, 4]))
    value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, size, size + 1]))
    return data[:at] + (value % (1 << (8 * width))).to_bytes(width, "little") + data[at + width :]


@st.composite
def _edits(draw: st.DrawFn, seed: bytes, max_edits: int) -> bytes:
    data = seed
    for _ in range(draw(st.integers(1, max_edits))):
        data = draw(_edit(data))
    return data


def byte_mutations(seed: bytes, *, max_edits: int = 4, max_random: int = 2048) -> st.SearchStrategy[bytes]:
    """Random bytes, or ``seed`` with 1 to ``max_edits`` random edits (mostly the latter)."""
    return st.one_of(st.binary(max_size=max_random), _edits(seed, max_edits), _edits(seed, max_edits))


# --- JSON ----------------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value, small."""


def deep_json(depth: int) -> Any:
    """A list nested ``depth`` levels, built iteratively (keep ``depth`` under ~950 when the value is
    to be encoded with ``json.dumps``, which recurses)."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def deep_json_text(depth: int = DEEP, opener: str = "[") -> str:
    """JSON text nested ``depth`` levels: ``[[[…]]]`` or ``{"a":{"a":…}}``."""
    if opener == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of ``doc`` as a path of keys/indexes (the root is ``()``)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):  # long byte arrays: a few elements stand for the rest
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    out = list(doc)
    out[head] = _replace(out[head], rest, value)
    return out


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != path[0]}
        return doc[: path[0]] + doc[path[0] + 1 :]
    head = path[0]
    if isinstance(doc, dict):
        return {**doc, head: _delete(doc[head], path[1:])}
    out = list(doc)
    out[head] = _delete(out[head], path[1:])
    return out


@st.composite
def _json_edit(draw: st.DrawFn, seed: Any, deep_levels: tuple[int, ...]) -> Any:
    doc = seed
    kinds = ["replace", "replace", "delete"] + (["deep"] if deep_levels else [])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        kind = draw(st.sampled_from(kinds))
        if kind == "delete" and path:
            doc = _delete(doc, path)
        elif kind == "deep":
            doc = _replace(doc, path, deep_json(draw(st.sampled_from(deep_levels))))
        else:
            doc = _replace(doc, path, draw(JSON_VALUES))
    return doc


def json_mutations(seed: Any, deep_levels: tuple[int, ...] = (200, 600)) -> st.SearchStrategy[Any]:
    """``seed`` (a decoded JSON document) with 1 to 3 nodes replaced, deleted or nested
    ``deep_levels`` deep (pass ``()`` when the document is then written by a recursive encoder
    whose own recursion limit would make the example flaky)."""
    return _json_edit(seed, deep_levels)


def json_bytes_mutations(seed: Any) -> st.SearchStrategy[bytes]:
    """Encoded JSON inputs: structural mutations of ``seed``, byte edits of its text, random bytes,
    and text nested beyond the recursion limit."""
    text = json.dumps(seed).encode()
    structural = json_mutations(seed).map(lambda doc: json.dumps(doc).encode())
    nested = st.sampled_from(["[", "{"]).map(lambda o: deep_json_text(opener=o).encode())
    return st.one_of(structural, structural, byte_mutations(text), nested)
