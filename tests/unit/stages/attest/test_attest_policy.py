"""Rego policies: Trustee's own policies run on our claims; our defaults; resource decisions
name the failed rule; scoped policies; invalid policies are refused when set."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import PolicyInvalid, PolicyNotFound
from ccpipe.stages.attest.policy_store import FilePolicyStore, PolicyStore, evaluate_resource_policy
from ccpipe.stages.attest.policy_text import StoredPolicy
from ccpipe.stages.attest.rego_engine import ENGINES
from ccpipe.stages.attest.verifiers import Binding, VerifierConfig, verifier_for
from tests.conftest import vector

E2E_MEASUREMENT = (
    "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e"
)
E2E_REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)


def trustee(path: str) -> str:
    return vector("trustee", f"policies/{path}").read_text()


@pytest.fixture(scope="module")
def genoa_input() -> dict[str, Any]:
    """Policy input built from the real Genoa report, verified by our SNP verifier."""
    evidence = vector("trustee", "snp-e2e/evidence.json").read_bytes()
    claims = verifier_for(TeeType.SNP, VerifierConfig()).verify(evidence, Binding(report_data=E2E_REPORT_DATA))
    return {"snp": claims.fields, "init_data": claims.init_data, "report_data": claims.report_data,
            "ccpipe": {"emulated": False}}


def trust(store: PolicyStore, policy_id: str, policy_input: dict[str, Any], rv: dict[str, list[Any]]) -> dict[str, int]:
    return store.compiled_attestation_policy(policy_id).trust_vector(policy_input, rv)


def test_trustees_default_cpu_policy_runs_unchanged_on_our_claims(genoa_input: dict[str, Any]) -> None:
    store = PolicyStore()
    store.set_policy("trustee", trustee("as-ear-default/ear_default_policy_cpu.rego"))
    tcb = {"snp_bootloader": [10], "snp_tee_svn": [0], "snp_snp_svn": [23], "snp_microcode": [25]}
    vec = trust(store, "trustee", genoa_input, {"snp_launch_measurement": [E2E_MEASUREMENT], **tcb})
    assert (vec["executables"], vec["hardware"], vec["configuration"]) == (3, 2, 3)
    vec = trust(store, "trustee", genoa_input, {"snp_launch_measurement": ["00" * 48], **tcb})
    assert vec["executables"] == 33
    vec = trust(store, "trustee", genoa_input, {"snp_launch_measurement": [E2E_MEASUREMENT], "snp_microcode": [26]})
    assert vec["hardware"] == 97


def test_our_default_policy_on_real_evidence(genoa_input: dict[str, Any]) -> None:
    store = PolicyStore()
    assert trust(store, "default", genoa_input, {"snp_launch_measurement": [E2E_MEASUREMENT]}) == {
        "executables": 3, "hardware": 2, "configuration": 3, "file-system": 0,
        "instance-identity": 0, "runtime-opaque": 0, "storage-opaque": 0, "sourced-data": 0,
    }
    assert trust(store, "default", genoa_input, {})["executables"] == 33
    assert trust(store, "default", genoa_input, {"snp_microcode": [26]})["hardware"] == 97
    # host_data of this report is zero: a registered initdata digest of zeros approves the configuration,
    # any other registered digest is a contraindication.
    assert trust(store, "default", genoa_input, {"init_data_digest": ["00" * 32]})["configuration"] == 2
    assert trust(store, "default", genoa_input, {"init_data_digest": ["ab" * 32]})["configuration"] == 96


def test_emulated_evidence_is_never_genuine_hardware(genoa_input: dict[str, Any]) -> None:
    emulated = {**genoa_input, "ccpipe": {"emulated": True}}
    assert trust(PolicyStore(), "default", emulated, {})["hardware"] == 32


def test_setting_default_cpu_replaces_default_as_in_trustee(genoa_input: dict[str, Any]) -> None:
    store = PolicyStore()
    store.set_policy("default_cpu", trustee("as-test/ear_no_rv_policy_cpu.rego"))
    assert store.compiled_attestation_policy("default").policy.policy_id == "default_cpu"


@pytest.mark.parametrize(
    "text",
    ["package policy\nthis is not rego", "package policy\nimport rego.v1\ntrust_claims := unknown_fn(1)\n",
     "package policy\nimport rego.v1\ntrust_claims := {\"executables\": \"three\"}\n"],
)
def test_invalid_policies_are_refused_when_set_and_the_old_one_stays(text: str) -> None:
    store = PolicyStore()
    before = store.get_policy("default")
    with pytest.raises(PolicyInvalid):
        store.set_policy("default", text)
    assert store.get_policy("default") == before


def test_digest_is_sha256_of_the_text_and_unknown_ids_are_reported() -> None:
    text = trustee("as-test/ear_no_rv_policy_cpu.rego")
    stored = PolicyStore().set_policy("p1", text)
    assert stored.digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(PolicyNotFound):
        PolicyStore().get_policy("nope")


def test_file_store_persists_policies(tmp_path: Path) -> None:
    FilePolicyStore(tmp_path).set_policy("strict", trustee("kbs-resource/affirming.rego"), kind="resource")
    again = FilePolicyStore(tmp_path)
    assert again.get_policy("strict", kind="resource").text == trustee("kbs-resource/affirming.rego")
    with pytest.raises(PolicyNotFound):
        again.get_policy("strict")  # an attestation policy of that id does not exist


def token(status: str, tee: str = "snp", emulated: bool = False, hardware: int = 2) -> dict[str, Any]:
    return {"submods": {"cpu0": {
        "ear.status": status,
        "ear.trustworthiness-vector": {"executables": 3, "hardware": hardware, "configuration": 2},
        "ear.veraison.annotated-evidence": {tee: {}, "ccpipe": {"emulated": emulated}},
    }}}


def test_trustees_resource_policies() -> None:
    store = PolicyStore()
    store.set_policy("trustee-default", trustee("kbs-resource/default.rego"), kind="resource")
    store.set_policy("affirming", trustee("kbs-resource/affirming.rego"), kind="resource")
    store.set_policy("deny", trustee("kbs-resource/deny_all.rego"), kind="resource")
    assert evaluate_resource_policy(store, "trustee-default", token("warning"), "default/key/1").allowed
    denied = evaluate_resource_policy(store, "trustee-default", token("affirming", tee="sample"), "default/key/1")
    assert not denied.allowed and denied.rule == "trustee-default:allow"
    assert not evaluate_resource_policy(store, "trustee-default", token("affirming"), "x/y/z", plugin="other").allowed
    assert evaluate_resource_policy(store, "affirming", token("affirming"), "default/key/1").allowed
    assert not evaluate_resource_policy(store, "affirming", token("warning"), "default/key/1").allowed
    assert not evaluate_resource_policy(store, "deny", token("affirming"), "default/key/1").allowed


def test_our_default_resource_policy_names_the_failed_rule() -> None:
    store = PolicyStore()
    ok = evaluate_resource_policy(store, "default", token("affirming"), "default/key/1")
    assert ok.allowed and ok.policy_ids == ("default",)
    bad = evaluate_resource_policy(store, "default", token("contraindicated", hardware=97), "default/key/1")
    assert (bad.allowed, bad.rule) == (False, "default:ear-status")
    assert "cpu0" in bad.reason and "contraindicated" in bad.reason
    empty = evaluate_resource_policy(store, "default", {}, "default/key/1")
    assert empty.rule == "default:appraisal"
    # emulated hardware (32) alone is acceptable; real hardware with a warning is not
    assert evaluate_resource_policy(store, "default", token("warning", emulated=True, hardware=32), "a/b/c").allowed
    assert not evaluate_resource_policy(store, "default", token("warning", hardware=32), "a/b/c").allowed


def test_scoped_policies_must_also_allow_within_their_prefix() -> None:
    store = PolicyStore()
    store.set_policy("team-a", trustee("kbs-resource/deny_all.rego"), kind="resource", scope="team-a/key")
    inside = evaluate_resource_policy(store, "default", token("affirming"), "team-a/key/1")
    assert (inside.allowed, inside.rule) == (False, "team-a:allow")
    assert inside.policy_ids == ("default", "team-a")
    assert evaluate_resource_policy(store, "default", token("affirming"), "team-b/key/1").allowed
    assert evaluate_resource_policy(store, "default", token("affirming"), "team-a/keys/1").allowed


def test_scope_only_for_resource_policies() -> None:
    with pytest.raises(PolicyInvalid):
        PolicyStore().set_policy("x", trustee("as-test/ear_no_rv_policy_cpu.rego"), scope="a/b")
    assert StoredPolicy("a", "resource", "t").digest.startswith("sha256:")


def test_many_resource_paths_under_one_policy_keep_one_compiled_engine() -> None:
    # Key paths are per workload: an engine per path grew the KBS by ~4 MB a workload (issue 17).
    store = PolicyStore()
    claims = {"submods": {"cpu0": {"ear.status": "affirming"}}}
    ENGINES.clear()
    decisions = {evaluate_resource_policy(store, "default", claims, f"ccpipe/wl-{i}/image-key").allowed
                 for i in range(200)}
    assert decisions == {True} and len(ENGINES) == 1
