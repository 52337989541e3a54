"""The shipped policies, rewritten so that every read names a claim (for the decision memo),
decide exactly as their first versions (kept in ``policies_v1/``) on every well-formed input —
and more strictly on the malformed ones where they differ."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.stages.attest.policy_eval import CompiledAttestationPolicy, evaluate_one_resource_policy
from ccpipe.stages.attest.policy_text import StoredPolicy, builtin_policy_text

V1 = Path(__file__).parent / "policies_v1"
OLD_ATT = CompiledAttestationPolicy(StoredPolicy("v1", "attestation", (V1 / "attestation_default.rego").read_text()))
NEW_ATT = CompiledAttestationPolicy(
    StoredPolicy("default", "attestation", builtin_policy_text("attestation", "default") or "")
)
OLD_RES = StoredPolicy("default", "resource", (V1 / "resource_default.rego").read_text())
NEW_RES = StoredPolicy("default", "resource", builtin_policy_text("resource", "default") or "")

M = ["aa" * 48, "bb" * 48]
svn = st.sampled_from([1, 2])
snp = st.fixed_dictionaries({
    "measurement": st.sampled_from(M), "report_data": st.text(max_size=4),
    "reported_tcb_bootloader": svn, "reported_tcb_tee": svn, "reported_tcb_snp": svn, "reported_tcb_microcode": svn,
    "policy_debug_allowed": st.booleans(), "policy_migrate_ma": st.booleans(),
})
tdx = st.fixed_dictionaries({
    "quote": st.fixed_dictionaries({"body": st.fixed_dictionaries({
        "mr_td": st.sampled_from(M), "rtmr_1": st.sampled_from(M), "rtmr_2": st.sampled_from(M),
        "mr_seam": st.sampled_from(M), "xfam": st.sampled_from(["e7", "e6"]), "report_data": st.text(max_size=4),
    })}),
    "tcb_status": st.sampled_from(["UpToDate", "OutOfDate", "SWHardeningNeeded", "Revoked", "Unknown"]),
    "collateral_expiration_status": st.sampled_from(["0", "1"]),
    "td_attributes": st.fixed_dictionaries({"debug": st.booleans()}),
})
sample = st.fixed_dictionaries({"launch_digest": st.sampled_from(["abcde", "other"]), "debug": st.booleans(),
                                "svn": st.sampled_from(["1", "2"])})
INIT = ["11" * 32, "22" * 32]
policy_input = st.fixed_dictionaries(
    {},
    optional={
        "snp": snp, "tdx": tdx, "sample": sample,
        "init_data": st.sampled_from([*INIT, None, "11" * 16]),
        "report_data": st.text(max_size=4),
        "ccpipe": st.fixed_dictionaries({}, optional={"emulated": st.sampled_from([True, False, 1, None])}),
    },
)
NAMES: dict[str, list[Any]] = {
    "snp_launch_measurement": M, "mr_td": M, "rtmr_1": M, "rtmr_2": M, "mr_seam": M, "launch_digest": ["abcde", "x"],
    "snp_bootloader": [1, 2], "snp_tee_svn": [1, 2], "snp_snp_svn": [1, 2], "snp_microcode": [1, 2],
    "xfam": ["e7", "e6"], "init_data_digest": INIT,
}
references = st.fixed_dictionaries(
    {}, optional={name: st.lists(st.sampled_from(values), max_size=2) for name, values in NAMES.items()}
)


@settings(max_examples=400, deadline=None)
@given(doc=policy_input, refs=references)
def test_attestation_policy_decides_as_its_first_version(doc: dict[str, Any], refs: dict[str, list[Any]]) -> None:
    assert NEW_ATT.trust_vector(doc, refs) == OLD_ATT.trust_vector(doc, refs)


def test_attestation_policy_without_a_measurement_claim_is_never_more_trusted() -> None:
    # A claims object without the launch measurement every verifier emits is malformed: the
    # rewritten policy then treats the TEE as absent (v1 looked at the object as a whole).
    doc = {"snp": {"policy_debug_allowed": False, "policy_migrate_ma": False}}
    old, new = OLD_ATT.trust_vector(doc, {}), NEW_ATT.trust_vector(doc, {})
    assert (old["configuration"], new["configuration"]) == (3, 36)
    assert new["hardware"] == old["hardware"] == 97


vector = st.dictionaries(st.sampled_from(["executables", "hardware", "configuration"]),
                         st.sampled_from([-1, 0, 2, 31, 32, 33, 96, 97]), max_size=3)
submod = st.fixed_dictionaries({
    "ear.status": st.sampled_from(["affirming", "warning", "contraindicated", "none"]),
    "ear.trustworthiness-vector": vector,
    "ear.veraison.annotated-evidence": st.fixed_dictionaries({
        "ccpipe": st.fixed_dictionaries({"emulated": st.sampled_from([True, False])}),
        "report_data": st.text(max_size=4),
    }),
})
token = st.fixed_dictionaries({}, optional={
    "submods": st.dictionaries(st.sampled_from(["cpu0", "gpu0", "x"]), submod, max_size=2),
    "jti": st.text(max_size=4),
})


def decide(policy: StoredPolicy, claims: dict[str, Any], plugin: str) -> tuple[bool, str, str]:
    d = evaluate_one_resource_policy(policy, claims, "repo/type/tag", plugin=plugin)
    return d.allowed, d.rule, d.reason


@settings(max_examples=400, deadline=None)
@given(claims=token, plugin=st.sampled_from(["resource", "other"]))
def test_resource_policy_decides_as_its_first_version(claims: dict[str, Any], plugin: str) -> None:
    assert decide(NEW_RES, claims, plugin) == decide(OLD_RES, claims, plugin)


def test_resource_policy_decides_as_its_first_version_on_every_single_appraisal() -> None:
    values = [None, -1, 0, 31, 32, 33, 96]
    names = ("executables", "hardware", "configuration")
    for status in ("affirming", "warning", "contraindicated", "none"):
        for emulated in (True, False):
            for triple in itertools.product(values, repeat=3):
                vec = {k: v for k, v in zip(names, triple, strict=True) if v is not None}
                evidence = {"ccpipe": {"emulated": emulated}}
                claims = {"submods": {"cpu0": {"ear.status": status, "ear.trustworthiness-vector": vec,
                                               "ear.veraison.annotated-evidence": evidence}}}
                assert decide(NEW_RES, claims, "resource") == decide(OLD_RES, claims, "resource"), claims


def test_resource_policy_denies_appraisals_without_a_status_that_v1_let_through() -> None:
    # v1 formatted its denial with the missing status, so the denial itself was undefined.
    cases: list[dict[str, Any]] = [{"submods": {"cpu0": {}}}, {"submods": "x"}]
    for claims in cases:
        assert decide(OLD_RES, claims, "resource")[0]
        assert decide(NEW_RES, claims, "resource") == (False, "default:appraisal", "the token carries no appraisal")
