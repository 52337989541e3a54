"""The evidence / RCAR body JSON decoder (orjson where it agrees with json) gives json's result
on every text: the same value, or the same refusal."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.stages.attest.exact_json import loads_exact as _loads
from tests.conftest import vector


def outcome(parse: Any, text: bytes) -> str:
    try:
        return "value " + repr(parse(text))  # repr: -0.0, nan, key order and int vs float all show
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return "refused " + type(exc).__name__
    except RecursionError:
        return "too deep"


def agree(text: bytes) -> None:
    """Same outcome — except where json runs out of stack: there the decoder refuses with
    JsonTooDeep, a ValueError (never a RecursionError), or, nesting near the recursion limit,
    orjson (up to 1024 levels) may parse: the verifier then rejects the shape."""
    mine, theirs = outcome(_loads, text), outcome(json.loads, text)
    if theirs == "too deep":
        assert mine == "refused JsonTooDeep" or mine.startswith("value ")
    else:
        assert mine == theirs


NUMBERS = (st.integers() | st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([0, -0.0, 2**64, 2**64 - 1]))
VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=VALUES, ascii_only=st.booleans())
def test_same_result_as_json_on_valid_texts(value: Any, ascii_only: bool) -> None:
    # ensure_ascii writes lone surrogates as \\ud800 escapes; otherwise they cannot be encoded.
    try:
        text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value).encode()
    agree(text)


@settings(max_examples=300, deadline=None)
@given(text=st.binary(max_size=40) | st.sampled_from([
    b"\xef\xbb\xbf{}", b"NaN", b"1e400", b'"\\ud800"', b'{"a":1,"a":2}',
    b"[" * 2000 + b"]" * 2000, b"[" * 900 + b"]" * 900,
    b"12345678901234567890123", b"\xff", "{}".encode("utf-16"), b"1.0000000000000000001",
]))
def test_same_result_as_json_on_any_bytes(text: bytes) -> None:
    agree(text)


def test_real_evidence() -> None:
    for folder, name in (("trustee", "snp-e2e/evidence.json"),):
        text = vector(folder, name).read_bytes()
        assert _loads(text) == json.loads(text)
