"""What a policy can read of ``input``, from its text, and the projection a decision memo keys on.

The soundness property under test: two inputs with the same projection get the same decision
from the engine — checked directly against rego-cpp on generated inputs and policies whose
reads take every form the analyser distinguishes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.stages.attest.policy import _REFERENCE_MODULE
from ccpipe.stages.attest.policy_memo import DecisionKeys, DecisionMemo
from ccpipe.stages.attest.policy_reads import NotProjectable, analyse, canonical, describe, project
from ccpipe.stages.attest.rego_input import rego_input
from tests.conftest import vector


def reads(body: str) -> list[str] | str:
    r = analyse([f"package policy\nimport rego.v1\n{body}\n"])
    return describe(r.trie) if r.reason is None else r.reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("allow if input.a.b == 1", ["a.b"]),
        ('allow if input["a"]["b.c"] == 1', ["a.b.c"]),
        ('allow if input.a[ "b" ] == 1', ["a.b"]),
        ("allow if input.a[`raw`] == 1", ["a.raw"]),
        ('allow if input.a["b\\u005fc"] == 1', ["a.b_c"]),  # escapes decode as Rego (JSON) does
        ('allow if input.submods[n]["ear.status"] == "x"', ["submods.*.ear.status"]),
        ("allow if input.a[_].b", ["a.*.b"]),
        ("allow if input.a[0].b", ["a"]),  # a number index: the whole of a
        ('allow if input.a[concat("", ["b"])]', ["a"]),  # an expression: the whole of a
        ("allow if input.a[x.y]", ["a"]),
        ("allow if count(input.a) > 1", ["a"]),
        ("allow if input.a.b\nallow if input.a", ["a"]),  # a prefix read whole absorbs its paths
        ("allow if input.a\nallow if input.a.b", ["a"]),
        ("allow if data.input.x", ["x"]),  # not input, but counted: never fewer reads than real
        ("# input.comment only\nallow if true", ["comment"]),
    ],
)
def test_paths_read(body: str, expected: list[str]) -> None:
    assert reads(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        'allow if object.get(input, "a", 0) == 1',
        "allow if walk(input, [p, v])",
        "allow if { x := input; x.a == 1 }",
        "allow if input .a",  # whitespace ends the reference: the whole input
        "allow if input",
        "# the input\nallow if input.a",
    ],
)
def test_bare_input_is_the_whole_input_and_not_memoisable(body: str) -> None:
    assert reads(body) == "reads the whole input"


@pytest.mark.parametrize(
    "body",
    ['allow if f with input as {"a": 1}', "allow if f with input.a as 1", "import input.a\nallow if a.b"],
)
def test_with_and_import_of_input_are_not_memoisable(body: str) -> None:
    assert "input" in str(reads(body)) and not isinstance(reads(body), list)


@pytest.mark.parametrize(
    "body",
    [
        "allow if time.now_ns() > input.t",
        "allow if rand.intn(\"x\", 2) == input.a",
        "allow if uuid.rfc4122(\"x\") == input.a",
        'allow if http.send({"method": "get", "url": input.u})',
        "allow if net.lookup_ip_addr(input.h)",
        "allow if opa.runtime().env.X == input.a",
        "allow if io.jwt.decode_verify(input.t, {})",
        "allow if crypto.x509.parse_and_verify_certificates(input.c)",
        "allow if { print(input.a); true }",
        "allow if { trace(input.a); true }",
    ],
)
def test_non_deterministic_builtins_are_not_memoisable(body: str) -> None:
    assert "non-deterministic" in str(reads(body))


def test_shipped_and_trustee_policies() -> None:
    from ccpipe.stages.attest.policy import builtin_policy_text

    att = analyse([builtin_policy_text("attestation", "default") or "", _REFERENCE_MODULE])
    assert att.memoisable
    assert "report_data" not in " ".join(describe(att.trie))
    assert "snp" not in describe(att.trie) and "snp.measurement" in describe(att.trie)
    res = analyse([builtin_policy_text("resource", "default") or ""])
    assert describe(res.trie) == [
        "submods.*.ear.status",
        "submods.*.ear.trustworthiness-vector",
        "submods.*.ear.veraison.annotated-evidence.ccpipe.emulated",
    ]
    # Trustee's default CPU policy mentions time.parse_rfc3339_ns (in a comment): never memoised.
    trustee = vector("trustee", "policies/as-ear-default/ear_default_policy_cpu.rego").read_text()
    assert not analyse([trustee]).memoisable


def test_projection_keeps_what_is_read_and_tells_missing_from_null() -> None:
    trie = analyse(['x if input.a.b\ny if input.m[k].v\n']).trie
    base = {"a": {"b": 1, "other": 2}, "m": {"p": {"v": 1, "w": 9}}, "nonce": "n1"}
    same = {"a": {"b": 1, "other": 3}, "m": {"p": {"v": 1, "w": 8}}, "nonce": "n2"}
    assert canonical(project(base, trie)) == canonical(project(same, trie))
    for changed in (
        {**base, "a": {"b": None}},  # null …
        {**base, "a": {}},  # … is not missing
        {**base, "a": {"b": True}},  # true is not 1
        {**base, "a": {"b": 1.0}},  # nor is 1.0 (conservative)
        {**base, "a": "s"},  # not an object: the whole value
        {**base, "m": {"p": {"v": 1}, "q": {}}},  # another key under the wildcard
        {**base, "m": {}},
        {**base, "a": {"b": 2**70}},  # beyond orjson: the standard encoder's key …
        {**base, "a": {"b": str(2**70)}},  # … is not a string's, nor anything orjson writes
        {**base, "a": {"b": "\u00e9"}},  # non-ASCII text is kept as text
    ):
        assert canonical(project(changed, trie)) != canonical(project(base, trie)), changed
    big = canonical(project({**base, "a": {"b": 2**70}}, trie))
    assert big != canonical(project({**base, "a": {"b": float(2**70)}}, trie))
    assert big == canonical(project({**same, "a": {"b": 2**70}}, trie))  # and stays deterministic


@pytest.mark.parametrize("value", [{"a": {1: "x"}}, {"a": {1, 2}}, {"a": float("nan")}, {"a": float("inf")},
                                   {"a": b"x"}, {"a": "\ud800"}])
def test_values_without_an_exact_canonical_form_are_not_memoised(value: Any) -> None:
    keys = DecisionKeys("resource", ["package policy\nx := input.a\n"])
    with pytest.raises(NotProjectable):
        canonical(project(value, None))
    assert keys.key(value) is None


def test_memo_is_bounded_and_can_be_disabled() -> None:
    memo = DecisionMemo(size=2)
    for i in range(3):
        memo.put(bytes([i]), str(i))
    assert len(memo) == 2 and memo.get(b"\x00") is None and memo.get(b"\x02") == "2"
    memo.configure(0)
    keys = DecisionKeys("resource", ["package policy\nx := input.a\n"])
    assert len(memo) == 0 and keys.key({"a": 1}, memo) is None


def test_a_key_with_a_nul_is_never_memoised() -> None:
    # regopy hands the engine "a\x00b" as "a": input.a is then 1 although the dict has no "a".
    engine = Engine("x := input.a")
    assert engine.decide({"a\x00b": 1}) != engine.decide({})
    assert engine.keys.key({"a\x00b": 1}) is None and engine.keys.key({}) is not None
    assert engine.keys.key({"m": {"a\x00b": 1}}) is not None  # not read: harmless
    assert reads('allow if input["a\\u0000b"].c') == "reads the whole input"


# --- soundness against the engine ------------------------------------------------------------

POLICIES = [
    "a := input.a\nb := input.a.b",
    'w contains [k, v] if { v := input.m[k].x }\nn := count({k | input.m[k]})',
    'bracket := input["a"]["b"]\nflag if input.flag == true\none if input.flag == 1',
    "nul if input.a == null\nmissing if not input.a\nt := type_name(input.a)",
    "keys := object.keys(input.m)\nfirst := input.l[0]",
    'deep contains v if { some k; v := input.m[k][j] }',
    'both := [input.m.p.x, input.m[q].x]',
    "arr contains x if { x := input.l[_] }\nvals contains v if { some v in input.m }",
]
KEYS = st.sampled_from(["a", "b", "m", "x", "p", "l", "flag", "é", "", "a\x00", "p\x00q"])
SCALARS = st.sampled_from([None, True, False, 0, 1, 1.0, -0.0, "", "aa", "é\u2603", 2**40])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)


def nul_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any("\x00" in k or nul_key(v) for k, v in value.items())
    return isinstance(value, list) and any(nul_key(v) for v in value)


class Engine:
    def __init__(self, body: str) -> None:
        self.text = f"package policy\nimport rego.v1\n{body}\n"
        self.interp = regopy.Interpreter()
        self.interp.add_module("p.rego", self.text)
        self.bundle = self.interp.build("data.policy")
        self.keys = DecisionKeys("test", [self.text])
        self.seen: dict[bytes, str] = {}

    def decide(self, doc: Any) -> str:
        self.interp.set_input(rego_input(doc))
        return str(self.interp.query_bundle(self.bundle))


ENGINES = [Engine(p) for p in POLICIES]


@pytest.mark.parametrize("engine", ENGINES, ids=[p.split("\n")[0][:20] for p in POLICIES])
@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(KEYS, JSON, max_size=5))
def test_same_projection_same_decision(engine: Engine, doc: dict[str, Any]) -> None:
    assert engine.keys.reads.memoisable, engine.keys.reads.reason
    out = engine.decide(doc)
    json.loads(out)  # the engine answered, not an error text
    key = engine.keys.key(doc)
    if key is None:  # only for keys regopy would pass cut short (see the next test)
        assert nul_key(doc)
        return
    # Inputs drawn from few keys and values collide often: each collision is a memo hit that
    # must carry exactly the decision the engine gives this input.
    assert engine.seen.setdefault(key, out) == out
