"""What a compiled policy reads of ``input`` and ``data``, as rego-cpp's plan states it, and the
projection a decision memo and the engine cache key on.

The soundness property under test: a memoised decision (and a shared engine) always equals what
a fresh, uncached evaluation gives — checked against rego-cpp on generated inputs, for the
shipped policies and for policies whose reads take every form the analysis distinguishes,
adversarial ones included (``input[x]``, ``with input as``, ``walk``, ``object.get``, a clock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.stages.attest.policy_eval import REFERENCE_INPUT_KEY, REFERENCE_MODULE, resource_data
from ccpipe.stages.attest.policy_memo import DECISIONS, DecisionKeys, DecisionMemo
from ccpipe.stages.attest.policy_reads import NotProjectable, canonical, describe, project
from ccpipe.stages.attest.policy_text import builtin_policy_text
from ccpipe.stages.attest.rego_engine import CompiledRego, EngineCache
from tests.conftest import vector


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    DECISIONS.clear()
    yield
    DECISIONS.clear()


def compiled(body: str, data: dict[str, Any] | None = None) -> CompiledRego:
    return CompiledRego((("p.rego", f"package policy\nimport rego.v1\n{body}\n"),), "data.policy", data or {})


def reads(body: str) -> list[str] | str:
    r = compiled(body).reads
    return describe(r.input) if r.reason is None else r.reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("allow if input.a.b == 1", ["a.b"]),
        ('allow if input["a"]["b.c"] == 1', ["a.b.c"]),
        ('allow if input.a["b\\u005fc"] == 1', ["a.*"]),  # an escaped key: every key of a
        ('allow if input.submods[n]["ear.status"] == "x"', ["submods.*.ear.status"]),
        ("allow if input.a[_].b", ["a.*.b"]),
        ("allow if input.a[0].b", ["a.*.b"]),  # a number index: any key (arrays are kept whole)
        ("allow if count(input.a) > 1", ["a"]),  # a builtin's argument: the whole value
        ("allow if input.a.b\nallow if input.a", ["a.b"]),  # a truth test of a: only what projection keeps
        ("allow if { x := input; x.a == 1 }", ["a"]),  # an alias is followed
        ("allow if data.input.x", []),  # data, not input
        ("# input.comment only\nallow if true", []),  # comments are not reads
        ("allow if input[`a\"b`] == 1", ["*"]),  # a quote in a key: every key
    ],
)
def test_paths_read(body: str, expected: list[str]) -> None:
    assert reads(body) == expected


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('allow if object.get(input, "a", 0) == 1', "whole input"),
        ("allow if walk(input, [p, v])", "whole input"),
        ('allow if input == {"a": 1}', "whole input"),
        ('allow if f with input as {"a": 1}\nf if input.a', "WithStmt"),
        ("allow if f with input.a as 1\nf if input.a", "WithStmt"),
        ("allow if time.now_ns() > input.t", "time.now_ns"),
        ('allow if rand.intn("x", 2) == input.a', "rand.intn"),
        ('allow if uuid.rfc4122("x") == input.a', "uuid.rfc4122"),
        ("allow if { print(input.a); true }", "print"),
    ],
)
def test_unbounded_reads_are_not_memoisable(body: str, why: str) -> None:
    assert why in str(reads(body))


def test_shipped_and_trustee_policies() -> None:
    att = CompiledRego(
        (("p.rego", builtin_policy_text("attestation", "default") or ""), ("r.rego", REFERENCE_MODULE)),
        "data.policy.trust_claims",
        {},
    ).reads
    assert att.memoisable
    assert "report_data" not in " ".join(describe(att.input))
    assert "snp" not in describe(att.input) and "snp.measurement" in describe(att.input)
    assert f"{REFERENCE_INPUT_KEY}.*" in describe(att.input)
    text = builtin_policy_text("resource", "default") or ""
    res = CompiledRego((("p.rego", text),), "data.policy", resource_data("a/b/c", "resource", {})).reads
    assert describe(res.input) == [
        "submods.*.ear.status",
        "submods.*.ear.trustworthiness-vector.*",
        "submods.*.ear.veraison.annotated-evidence.ccpipe.emulated",
    ]
    assert "resource-path" not in " ".join(describe(res.data))  # one engine serves every path
    # Trustee's default CPU policy reads times with time.*: never memoised.
    trustee = vector("trustee", "policies/as-ear-default/ear_default_policy_cpu.rego").read_text()
    assert not CompiledRego((("p.rego", trustee),), "data.policy", {}).reads.memoisable


def test_projection_keeps_what_is_read_and_tells_missing_from_null() -> None:
    trie = compiled('x if input.a.b\ny if input.m[k].v == 1').reads.input
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
    keys = DecisionKeys("data.policy", ["package policy\nx := input.a\n"], "")
    with pytest.raises(NotProjectable):
        canonical(project(value, None))
    assert keys.key(value, {"a": None}) is None


def test_memo_is_bounded_and_can_be_disabled() -> None:
    memo = DecisionMemo(size=2)
    for i in range(3):
        memo.put(bytes([i]), str(i))
    assert len(memo) == 2 and memo.get(b"\x00") is None and memo.get(b"\x02") == "2"
    memo.configure(0)
    keys = DecisionKeys("data.policy", ["package policy\nx := input.a\n"], "")
    assert len(memo) == 0 and keys.key({"a": 1}, {"a": None}, memo) is None


def test_a_key_with_a_nul_is_never_memoised() -> None:
    # regopy hands the engine "a\x00b" as "a": input.a is then 1 although the dict has no "a".
    engine, modules = compiled("x := input.a"), policy_modules("x := input.a")
    assert uncached(modules, {}, {"a\x00b": 1}) != uncached(modules, {}, {})
    assert engine.evaluate({"a\x00b": 1})[1] is None and engine.evaluate({})[1] is not None


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
    # adversarial: dynamic keys, aliases, replaced input, whole-input builtins, a clock
    "dyn := input.m[input.a]\nalias if { d := input.m; d.p.x == 1 }",
    'swapped if f with input as {"a": input.m}\nf if input.a.p',
    "walked contains p if walk(input.m, [p, _])\ngot := object.get(input, [\"m\", \"p\"], 0)",
    "now := time.now_ns() > 0\nsame := input.a",
    'plugin_ok if data.plugin == "resource"\npath := data["resource-path"]\nfirst := data["resource-path"][0]',
    "rule_value := data.policy.a\na := input.a",
]
SHIPPED = [
    ((("p.rego", builtin_policy_text("resource", "default") or ""),), "data.policy"),
    (
        (("p.rego", builtin_policy_text("attestation", "default") or ""), ("r.rego", REFERENCE_MODULE)),
        "data.policy.trust_claims",
    ),
]
KEYS = st.sampled_from(["a", "b", "m", "x", "p", "l", "flag", "é", "", "a\x00", "p\x00q"])
SCALARS = st.sampled_from([None, True, False, 0, 1, 1.0, -0.0, "", "aa", "é\u2603", 2**40])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DATA = st.fixed_dictionaries(
    {"plugin": st.sampled_from(["resource", "other"]),
     "path": st.lists(st.sampled_from(["a", "b", "key"]), min_size=1, max_size=3).map("/".join)}
).map(lambda d: resource_data(d["path"], d["plugin"], {}))


def uncached(modules: tuple[tuple[str, str], ...], data: dict[str, Any], doc: Any, query: str = "data.policy") -> str:
    """A fresh interpreter, compiled for this very data, no memo: the reference decision."""
    interp = regopy.Interpreter()
    for name, text in modules:
        interp.add_module(name, text)
    interp.add_data_json(json.dumps(data))
    interp.set_input(regopy.Input(doc))
    return str(interp.query_bundle(interp.build(query)))


def memoised(cache: EngineCache, modules: tuple[tuple[str, str], ...], query: str, data: dict[str, Any],
             doc: Any) -> str:
    """The product's path: a shared engine (keyed on the data it reads) and the decision memo."""
    out, key = cache.get(modules, query, data).evaluate(doc)
    if key is not None:
        DECISIONS.put(key, out)
    return out


def policy_modules(body: str) -> tuple[tuple[str, str], ...]:
    return (("p.rego", f"package policy\nimport rego.v1\n{body}\n"),)


CACHE = EngineCache(size=4)


@pytest.mark.parametrize("body", POLICIES, ids=[p.split("\n")[0][:24] for p in POLICIES])
@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.dictionaries(KEYS, JSON, max_size=5), min_size=1, max_size=4), data=DATA)
def test_memoised_and_uncached_decisions_agree(body: str, docs: list[dict[str, Any]], data: dict[str, Any]) -> None:
    # Inputs drawn from few keys and values collide often: each collision is a memo hit (or a
    # shared engine) that must carry exactly the decision a fresh engine gives this input.
    modules = policy_modules(body)
    for doc in docs:
        assert memoised(CACHE, modules, "data.policy", data, doc) == uncached(modules, data, doc)


def ear(status: str, vector: dict[str, int], emulated: Any, nonce: str) -> dict[str, Any]:
    evidence = {"ccpipe": {"emulated": emulated}, "runtime_data_claims": {"nonce": nonce}}
    return {"jti": nonce, "submods": {"cpu0": {"ear.status": status, "ear.trustworthiness-vector": vector,
                                               "ear.veraison.annotated-evidence": evidence}}}


EARS = st.builds(
    ear,
    st.sampled_from(["affirming", "warning", "contraindicated"]),
    st.dictionaries(st.sampled_from(["hardware", "executables"]), st.sampled_from([2, 3, 32, 96]), max_size=2),
    st.sampled_from([True, False, None]),
    st.sampled_from(["n1", "n2"]),
)
CLAIMS = st.fixed_dictionaries(
    {"snp": st.fixed_dictionaries({"measurement": st.sampled_from(["m1", "m2"]),
                                   "policy_debug_allowed": st.booleans(), "policy_migrate_ma": st.booleans(),
                                   "reported_tcb_snp": st.sampled_from([1, 2])}),
     "report_data": st.sampled_from(["r1", "r2"]),
     "init_data": st.sampled_from(["aa", "bb"]),
     REFERENCE_INPUT_KEY: st.fixed_dictionaries({"snp_launch_measurement": st.sampled_from([["m1"], ["m2"], []]),
                                                 "init_data_digest": st.sampled_from([["aa"], []])})},
    optional={"ccpipe": st.fixed_dictionaries({"emulated": st.booleans()})},
)


@settings(max_examples=80, deadline=None)
@given(ears=st.lists(EARS, min_size=1, max_size=4), data=DATA)
def test_shipped_resource_policy_memoised_and_uncached_agree(ears: list[dict[str, Any]], data: dict[str, Any]) -> None:
    modules, query = SHIPPED[0]
    for doc in ears:
        assert memoised(CACHE, modules, query, data, doc) == uncached(modules, data, doc, query)


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(CLAIMS, min_size=1, max_size=4))
def test_shipped_attestation_policy_memoised_and_uncached_agree(docs: list[dict[str, Any]]) -> None:
    modules, query = SHIPPED[1]
    for doc in docs:
        assert memoised(CACHE, modules, query, {}, doc) == uncached(modules, {}, doc, query)


def test_many_resource_paths_under_one_policy_keep_one_engine() -> None:
    cache = EngineCache(size=8)
    modules, query = SHIPPED[0]
    for i in range(100):
        cache.get(modules, query, resource_data(f"repo/wl-{i}/key", "resource", {}))
    assert len(cache) == 1
    # A policy that reads the path needs an engine per path: the bound holds them.
    for i in range(20):
        cache.get(policy_modules('allow if data["resource-path"][1] == "x"'), query,
                  resource_data(f"repo/wl-{i}/key", "resource", {}))
    assert len(cache) == 8
