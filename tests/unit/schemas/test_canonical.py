"""The fast canonical encoder gives exactly the RFC 8785 reference bytes, or defers to it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.schemas.canonical import canonical_json

SCALARS = (
    st.none() | st.booleans() | st.text() | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["\x00\x1f\x7f\"\\\b\f\n\r\t", "\u2028\u2029", "é€𝄞", "\ud800x", "a/b<c>&", ""])
)
KEYS = st.text() | st.sampled_from(["a", "B", "é", "€", "𝄞", "\ufb33", "", "\x00", "aa", "a\x7f"])
DOCS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=40)


def assert_like_reference(doc: Any) -> None:
    """canonical_json gives the rfc8785 library's bytes, or raises the error it raises."""
    try:
        want = rfc8785.dumps(doc)
    except rfc8785.CanonicalizationError as exc:
        with pytest.raises(type(exc)):
            canonical_json(doc)
        return
    assert canonical_json(doc) == want


@settings(max_examples=1500, deadline=None)
@given(DOCS)
def test_canonical_json_equals_the_rfc8785_reference(doc: object) -> None:
    assert_like_reference(doc)


@pytest.mark.parametrize("doc", [
    {"b": 1, "a": [True, None, "x"], "é": "non-ASCII key: reference path"},
    {"n": 2**53 - 1, "m": -(2**53 - 1)},
    {"big": 2**53},  # outside the safe range: the reference refuses it
    {"f": 1e21, "g": 0.1, "h": -0.0, "i": 5e-324},
    {"s": "\ud800"},  # lone surrogate
    {"ctl": "".join(chr(c) for c in range(0x20)) + "\x7f"},
])
def test_canonical_json_edge_cases(doc: object) -> None:
    assert_like_reference(doc)


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"x": math.nan})


FAST = st.recursive(
    st.none() | st.booleans() | st.text() | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), inner, max_size=6),
    max_leaves=60,
)


@settings(max_examples=1500, deadline=None)
@given(FAST)
def test_canonical_json_fast_path_documents_equal_the_reference(doc: object) -> None:
    """Documents of the fast path's shape (what events are): byte-identical to the library."""
    assert_like_reference(doc)
