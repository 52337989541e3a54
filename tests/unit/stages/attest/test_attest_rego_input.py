"""The fast Python → regopy input conversion builds exactly what ``regopy.Input`` builds."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.stages.attest.rego_input import rego_input
from tests.conftest import vector

INTERP = regopy.Interpreter()


def seen(make: Any, value: Any) -> str:
    """The engine's rendering of the input term (regopy cannot decode control characters in
    its own output: the error, with its position, is then the rendering)."""
    INTERP.set_input(make(value))
    try:
        return str(INTERP.query("x := input"))
    except ValueError as exc:
        return f"undecodable: {exc}"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(st.characters(blacklist_categories=["Cs"]), max_size=4), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_same_term_as_regopy(value: Any) -> None:
    assert seen(rego_input, value) == seen(regopy.Input, value)


@pytest.mark.parametrize(
    "value",
    [
        {"t": True, "one": 1, "f": False, "zero": 0, "fl": 1.0},  # bools stay bools, ints ints
        {"": {}, "é☃": [[], {}], "nul": "a\x00b"},  # empty containers, unicode, an embedded NUL
        OrderedDict([("b", 1), ("a", frozenset({1}))]),  # a mapping subclass and a set: regopy's own rules
        {"bytes": b"ab", "big": 2**70},  # bytes are a sequence of ints; out-of-range ints as regopy does
    ],
)
def test_edge_values(value: Any) -> None:
    assert seen(rego_input, value) == seen(regopy.Input, value)


def test_unconvertible_values_raise_as_regopy_does() -> None:
    for make in (regopy.Input, rego_input):
        with pytest.raises(ValueError, match="Cannot convert"):
            make({"a": object()})


def test_trustee_policies_decide_the_same_on_either_input() -> None:
    policy = vector("trustee", "policies/kbs-resource/default.rego").read_text()
    interp = regopy.Interpreter()
    interp.add_module("p.rego", policy)
    interp.add_data_json('{"plugin": "resource"}')

    def token(tee: str) -> dict[str, Any]:
        return {"submods": {"cpu0": {"ear.veraison.annotated-evidence": {tee: {"x": [1, True]}}}}}

    outs: dict[str, list[str]] = {}
    for make in (regopy.Input, rego_input):
        for claims in (token("sample"), token("snp"), {}):
            interp.set_input(make(claims))
            outs.setdefault(make.__name__, []).append(str(interp.query("data.policy.allow")))
    assert outs["Input"] == outs["rego_input"]
    assert outs["Input"][0] != outs["Input"][1]  # sample evidence is refused, SNP is not
