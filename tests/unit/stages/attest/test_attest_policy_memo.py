"""The decision memo through the service: reused across handshakes that differ only in
nonce-bound values, never for a policy that reads them, a changed reference value or policy,
or a policy that calls a clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regopy

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.evidence.measurement import launch_measurement_for
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.policy_memo import DECISIONS
from ccpipe.stages.attest.policy_store import PolicyStore, evaluate_resource_policy
from ccpipe.stages.attest.rvps import sample_message

WL = "wl-memo"


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    DECISIONS.clear()
    yield
    DECISIONS.clear()


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every rego-cpp bundle query (one per evaluation that was not memoised)."""
    count = [0]
    original = regopy.Interpreter.query_bundle

    def counted(self: regopy.Interpreter, bundle: Any) -> Any:
        count[0] += 1
        return original(self, bundle)

    monkeypatch.setattr(regopy.Interpreter, "query_bundle", counted)
    return count


@pytest.fixture
def service(tee_dir: Path) -> AttestationService:
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    svc.reference_values.register(sample_message({"snp_launch_measurement": [launch_measurement_for().hex()]}),
                                  scope=WL)
    return svc


def handshake(tee_dir: Path, nonce: int, **kw: Any) -> AppraisalRequest:
    """What the KBS asks per handshake: fresh report_data (nonce + key) and runtime data."""
    rd = nonce.to_bytes(48, "big")
    evidence = select_backend(tee_dir, prefer="emulated-snp").get_evidence(rd).evidence
    runtime = {"nonce": f"n{nonce}", "tee-pubkey": {"kty": "EC", "crv": "P-256", "x": f"x{nonce}", "y": "y"}}
    args: dict[str, Any] = {"tee": TeeType.SNP, "evidence": evidence, "expected_report_data": rd,
                            "workload_id": WL, "runtime_data": runtime}
    return AppraisalRequest(**{**args, **kw})


def test_two_handshakes_of_one_workload_query_each_policy_once(
    service: AttestationService, tee_dir: Path, queries: list[int]
) -> None:
    first, second = handshake(tee_dir, 1), handshake(tee_dir, 2)
    service.policies.compiled_attestation_policy("default")  # compiled (and probed) beforehand
    base = queries[0]
    a = service.appraise(first)
    b = service.appraise(second)
    assert a.ok and b.ok and a.trust_vector == b.trust_vector
    assert a.claims["report_data"] != b.claims["report_data"] and a.evidence_digest != b.evidence_digest
    assert queries[0] - base == 1
    path = f"ccpipe/{WL}/key"
    da = service.evaluate_resource_policy("default", a.ear_claims, path)
    db = service.evaluate_resource_policy("default", b.ear_claims, path)
    assert a.ear_claims["jti"] != b.ear_claims["jti"]
    assert da.allowed and db == da
    assert queries[0] - base == 2


def test_a_changed_reference_value_changes_the_decision(service: AttestationService, tee_dir: Path) -> None:
    assert service.appraise(handshake(tee_dir, 1)).trust_vector["executables"] == 3
    service.reference_values.register(sample_message({"snp_launch_measurement": ["00" * 48]}), scope=WL)
    after = service.appraise(handshake(tee_dir, 2))
    assert after.trust_vector["executables"] == 33 and not after.ok


def test_a_changed_policy_changes_the_decision(service: AttestationService, tee_dir: Path) -> None:
    assert service.appraise(handshake(tee_dir, 1)).ok
    text = service.policies.get_policy("default").text
    stricter = text.replace("default executables := 33", "default executables := 33\n\nforce_unknown := true")
    stricter = stricter.replace("executables := 3 if {\n\thas_snp\n", "executables := 3 if {\n\tnot force_unknown\n")
    assert stricter != text
    service.policies.set_policy("default", stricter)
    assert service.appraise(handshake(tee_dir, 2)).trust_vector["executables"] == 33


READERS = {
    "top-level report_data": 'x := 3 if input.report_data == "{rd}" else := 33',
    "claim report_data": 'x := 3 if input.snp.report_data == "{rd}" else := 33',
    "bracketed claim": 'x := 3 if input["snp"]["report_data"] == "{rd}" else := 33',
    "variable key": 'x := 3 if {{ some k; input.snp[k] == "{rd}" }} else := 33',
    "iteration": 'x := 3 if {{ some v in input.snp; v == "{rd}" }} else := 33',
    "function of input": 'x := 3 if object.get(input, ["snp", "report_data"], "") == "{rd}" else := 33',
    "alias": 'x := 3 if {{ doc := input; doc.report_data == "{rd}" }} else := 33',
}


@pytest.mark.parametrize("body", READERS.values(), ids=READERS.keys())
def test_a_policy_reading_report_data_is_decided_per_handshake(
    service: AttestationService, tee_dir: Path, body: str
) -> None:
    first, second = handshake(tee_dir, 1), handshake(tee_dir, 2)
    rd = first.expected_report_data.ljust(64, b"\0").hex()
    policy = 'package policy\nimport rego.v1\n\ntrust_claims := {"executables": x}\n' + body.format(rd=rd)
    service.policies.set_policy("reads-rd", policy)
    a = service.appraise(handshake(tee_dir, 1, policy_id="reads-rd"))
    b = service.appraise(handshake(tee_dir, 2, policy_id="reads-rd"))
    again = service.appraise(handshake(tee_dir, 1, policy_id="reads-rd"))
    assert (a.trust_vector, b.trust_vector, again.trust_vector) == (
        {"executables": 3}, {"executables": 33}, {"executables": 3}
    )
    assert second.expected_report_data != first.expected_report_data


def test_a_resource_policy_reading_the_nonce_is_decided_per_token(queries: list[int]) -> None:
    store = PolicyStore()
    store.set_policy("nonce", 'package policy\nimport rego.v1\nallow if input.submods.cpu0'
                     '["ear.veraison.annotated-evidence"].runtime_data_claims.nonce == "n1"', kind="resource")
    store.set_policy("jti", 'package policy\nimport rego.v1\nallow if input.jti == "j1"', kind="resource")

    def token(n: int) -> dict[str, Any]:
        evidence = {"runtime_data_claims": {"nonce": f"n{n}"}, "ccpipe": {"emulated": True}}
        return {"jti": f"j{n}", "submods": {"cpu0": {"ear.status": "affirming",
                                                      "ear.veraison.annotated-evidence": evidence}}}

    for pid in ("nonce", "jti"):
        decisions = [evaluate_resource_policy(store, pid, token(n), "a/b/c").allowed for n in (1, 2, 1, 2)]
        assert decisions == [True, False, True, False]


def test_a_policy_calling_the_clock_is_never_memoised(queries: list[int]) -> None:
    store = PolicyStore()
    store.set_policy("clock", 'package policy\nimport rego.v1\n'
                     'trust_claims := {"executables": 3} if time.now_ns() > 0 else := {"executables": 33}')
    compiled = store.compiled_attestation_policy("clock")
    assert not compiled.reads.memoisable and "time.now_ns" in str(compiled.reads.reason)
    base = queries[0]
    for _ in range(3):
        assert compiled.trust_vector({"snp": {}}, {}) == {"executables": 3}
    assert queries[0] - base == 3 and len(DECISIONS) == 0


def test_trustee_resource_policies_still_decide_correctly_when_memoised(queries: list[int]) -> None:
    from tests.conftest import vector

    store = PolicyStore()
    store.set_policy("affirming", vector("trustee", "policies/kbs-resource/affirming.rego").read_text(),
                     kind="resource")

    def token(status: str, nonce: str) -> dict[str, Any]:
        return {"jti": nonce, "submods": {"cpu0": {"ear.status": status, "nonce": nonce}}}

    got = [evaluate_resource_policy(store, "affirming", token(s, n), "a/b/c").allowed
           for s, n in (("affirming", "1"), ("warning", "2"), ("affirming", "3"), ("warning", "4"))]
    assert got == [True, False, True, False]
