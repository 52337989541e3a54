"""The attestation service end to end (verify → policy → EAR) on emulated and real evidence."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.evidence.measurement import launch_measurement_for, tdx_measurements_for
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.ear import verify_ear
from ccpipe.stages.attest.errors import PolicyNotFound
from ccpipe.stages.attest.rvps import sample_message
from tests.conftest import vector

RD = bytes(range(48))
WL = "wl-a"


@pytest.fixture
def service(tee_dir: Path) -> AttestationService:
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    svc.reference_values.register(
        sample_message({"snp_launch_measurement": [launch_measurement_for().hex()]}), scope=WL
    )
    return svc


@pytest.fixture
def evidence(tee_dir: Path) -> bytes:
    return select_backend(tee_dir, prefer="emulated-snp").get_evidence(RD).evidence


def req(evidence: bytes, **kw: object) -> AppraisalRequest:
    args: dict[str, object] = {"tee": TeeType.SNP, "evidence": evidence, "expected_report_data": RD, "workload_id": WL}
    return AppraisalRequest(**{**args, **kw})  # type: ignore[arg-type]


def test_emulated_evidence_with_registered_measurement_is_accepted(
    service: AttestationService, evidence: bytes
) -> None:
    pubkey = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}
    result = service.appraise(req(evidence, runtime_data={"nonce": "n", "tee-pubkey": pubkey}))
    assert result.ok and result.rejection is None
    assert result.emulated and result.backend == "emulated"
    assert result.ear_status == "warning" and result.trust_vector["executables"] == 3
    assert result.trust_vector["hardware"] == 32
    assert result.evidence_digest.startswith("sha256:") and result.policy_digest.startswith("sha256:")
    claims = verify_ear(result.ear_token, service.signer)
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert annotated["runtime_data_claims"]["tee-pubkey"] == pubkey  # where the KBS finds the key
    assert annotated["snp"]["measurement"] == launch_measurement_for().hex()
    assert claims["submods"]["cpu0"]["ear.veraison.policy-claims"]["policy_digest"] == result.policy_digest


def test_another_workloads_reference_values_do_not_authorise(service: AttestationService, evidence: bytes) -> None:
    result = service.appraise(req(evidence, workload_id="wl-b"))
    assert not result.ok
    assert result.rejection is not None and result.rejection.code == "attest.policy.contraindicated"
    assert "executables=33" in result.rejection.message
    assert result.ear_token  # still signed, for the audit trail


def test_tampered_evidence_is_rejected_naming_the_signature(service: AttestationService, evidence: bytes) -> None:
    doc = json.loads(evidence)
    doc["attestation_report"]["measurement"][0] ^= 1
    result = service.appraise(req(json.dumps(doc).encode()))
    assert not result.ok and result.rejection is not None
    assert result.rejection.code == "attest.evidence.signature"
    assert result.ear_token == "" and result.ear_status == "none"


def test_report_data_for_another_challenge_is_rejected(service: AttestationService, evidence: bytes) -> None:
    result = service.appraise(req(evidence, expected_report_data=bytes(48)))
    assert result.rejection is not None and result.rejection.code == "attest.evidence.report_data"


def test_emulated_evidence_is_refused_when_not_allowed(tee_dir: Path, evidence: bytes) -> None:
    strict = AttestationService.for_data_dir(tee_dir, allow_emulated=False)
    result = strict.appraise(req(evidence))
    assert result.rejection is not None and result.rejection.code == "attest.evidence.emulated"


DEEP = b'{"attestation_report":' + b"[" * 200_000 + b"]" * 200_000 + b"}"  # past any JSON parser's depth


@pytest.mark.parametrize("garbage", [b"", b"{", b"\x00" * 1184, b'{"attestation_report": {}}', b"x" * 100_000, DEEP])
def test_garbage_is_a_rejection_never_an_exception(service: AttestationService, garbage: bytes) -> None:
    result = service.appraise(req(garbage))
    assert not result.ok and result.rejection is not None
    assert result.rejection.code.startswith("attest.evidence")


def test_oversized_expected_report_data_is_an_invalid_request(service: AttestationService, evidence: bytes) -> None:
    result = service.appraise(req(evidence, expected_report_data=bytes(65)))
    assert result.rejection is not None and result.rejection.code == "attest.request.invalid"


def test_unknown_policy_is_a_configuration_error(service: AttestationService, evidence: bytes) -> None:
    with pytest.raises(PolicyNotFound):
        service.appraise(req(evidence, policy_id="nope"))


def test_real_genoa_evidence_is_affirmed_with_its_measurement(tee_dir: Path) -> None:
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=False)
    m = "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e"
    svc.reference_values.register(sample_message({"snp_launch_measurement": [m]}), scope="genoa")
    rd = bytes.fromhex(
        "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
        "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
    )
    ev = vector("trustee", "snp-e2e/evidence.json").read_bytes()
    result = svc.appraise(AppraisalRequest(tee=TeeType.SNP, evidence=ev, expected_report_data=rd, workload_id="genoa"))
    assert result.ok and result.ear_status == "affirming" and not result.emulated
    assert result.measurement == m


def test_services_on_one_data_dir_share_key_and_stores(service: AttestationService, tee_dir: Path,
                                                       evidence: bytes) -> None:
    other = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    result = other.appraise(req(evidence))
    assert result.ok  # sees the reference value registered through the first instance
    assert verify_ear(result.ear_token, service.signer)["submods"]


def test_emulated_tdx_is_appraised_with_emulated_collateral(tee_dir: Path) -> None:
    quote = select_backend(tee_dir, prefer="emulated-tdx").get_evidence(RD).evidence
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    values = {k: [v] for k, v in tdx_measurements_for().reference_values().items()}
    svc.reference_values.register(sample_message(values), scope=WL)  # type: ignore[arg-type]
    result = svc.appraise(req(quote, tee=TeeType.TDX))
    assert result.ok and result.emulated and result.trust_vector["executables"] == 3
    assert result.claims["tcb"]["tcb_status"] == "UpToDate"
    other = svc.appraise(req(quote, tee=TeeType.TDX, workload_id="wl-b"))
    assert other.rejection is not None and other.rejection.code == "attest.policy.contraindicated"


def test_sample_evidence_only_when_emulation_is_allowed(tee_dir: Path) -> None:
    evidence = json.dumps({"svn": "1", "report_data": base64.b64encode(RD).decode()}).encode()
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    svc.reference_values.register(sample_message({"launch_digest": ["abcde"]}), scope=WL)
    result = svc.appraise(req(evidence, tee=TeeType.SAMPLE))
    assert result.ok and result.emulated and result.ear_status == "warning"
    strict = AttestationService.for_data_dir(tee_dir, allow_emulated=False)
    refused = strict.appraise(req(evidence, tee=TeeType.SAMPLE))
    assert refused.rejection is not None and refused.rejection.code == "attest.verifier.unknown"


def test_a_policy_failing_on_real_input_is_a_rejection(service: AttestationService, evidence: bytes) -> None:
    odd = (
        "package policy\nimport rego.v1\n"
        'trust_claims := {"executables": "x"} if input.snp else := {"executables": 3}\n'
    )
    service.policies.set_policy("odd", odd)  # passes the empty-input check when it is set
    result = service.appraise(req(evidence, policy_id="odd"))
    assert not result.ok and result.rejection is not None
    assert result.rejection.code == "attest.policy.evaluation"


def test_embedded_layout_of_the_data_directory(service: AttestationService, tee_dir: Path) -> None:
    assert (tee_dir / "keys" / "attest" / "ear-signing.pem").is_file()
    assert (tee_dir / "attest" / "reference-values" / "scope" / WL / "snp_launch_measurement.json").is_file()
    service.policies.set_policy("mine", service.policies.get_policy("default").text)
    assert (tee_dir / "attest" / "policies" / "attestation" / "mine.json").is_file()


def test_emulated_roots_created_after_start_are_picked_up_and_read_once(
    tmp_path: Path, _emulated_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import ccpipe.stages.attest.appraisal as appraisal
    from ccpipe.evidence.emulated_roots import pki_dir
    from ccpipe.stages.attest.verifiers.emulated import EmulatedRoots, emulated_roots_in

    loads: list[Path | None] = []

    def counted(data_dir: Path | None) -> EmulatedRoots:
        loads.append(data_dir)
        return emulated_roots_in(data_dir)

    monkeypatch.setattr(appraisal, "emulated_roots_in", counted)
    d = tmp_path / "late"
    svc = AttestationService.for_data_dir(d, allow_emulated=True)  # no emulated roots yet
    svc.reference_values.register(sample_message({"snp_launch_measurement": [launch_measurement_for().hex()]}),
                                  scope=WL)
    for _ in range(3):
        svc.verifier(TeeType.SNP)
    assert len(loads) <= 1  # nothing changed on disk: nothing read again
    shutil.copytree(pki_dir(_emulated_template) / "snp", pki_dir(d) / "snp")  # the backend starts later
    evidence = select_backend(d, prefer="emulated-snp").get_evidence(RD).evidence
    assert svc.appraise(req(evidence)).ok
    assert svc.appraise(req(evidence)).ok
    n = len(loads)
    shutil.copytree(pki_dir(_emulated_template) / "tdx", pki_dir(d) / "tdx")
    svc.verifier(TeeType.SNP)
    assert len(loads) == n + 1  # the TDX root appeared: read once more, then never again
    for _ in range(3):
        svc.appraise(req(evidence))
    assert len(loads) == n + 1
