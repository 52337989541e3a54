"""The attest stage's pure part: a ``built`` payload → attestation.verified / rejected."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.events import AttestationRejected, AttestationVerified, Built, EventType
from ccpipe.stages.attest.appraisal import AttestationService
from ccpipe.stages.attest.handler import BUILD_RUNNER_SCOPE, appraise_built, register_build_runner_values

PROVENANCE = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "img"}], "predicate": {}}


@pytest.fixture
def service(tee_dir: Path) -> AttestationService:
    svc = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    register_build_runner_values(svc)
    return svc


def built(tee_dir: Path, *, report_data: bytes | None = None, evidence: str | None = None) -> Built:
    digest = hashlib.sha384(canonical_json(PROVENANCE)).digest()
    ev = select_backend(tee_dir, prefer="emulated-snp").get_evidence(report_data or digest.ljust(64, b"\0"))
    event_ev = ev.to_event_evidence()
    if evidence is not None:
        event_ev = event_ev.model_copy(update={"evidence": evidence})
    return Built(image_digest="sha256:" + "cd" * 32, layout="/x", provenance=PROVENANCE,
                 provenance_digest="sha384:" + digest.hex(), runner_evidence=event_ev)


def test_runner_evidence_binding_the_provenance_is_verified(service: AttestationService, tee_dir: Path) -> None:
    out = appraise_built(service, "wl-1", built(tee_dir))
    assert out.type == EventType.ATTESTATION_VERIFIED
    assert isinstance(out.payload, AttestationVerified)
    assert out.payload.purpose == "build-runner" and out.payload.token_id
    assert service.reference_values.values_for(BUILD_RUNNER_SCOPE)["snp_launch_measurement"]


def test_evidence_for_another_statement_is_rejected(service: AttestationService, tee_dir: Path) -> None:
    out = appraise_built(service, "wl-1", built(tee_dir, report_data=bytes(64)))
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.evidence.report_data"
    assert out.payload.evidence_digest is not None and out.payload.purpose == "build-runner"


def test_non_base64_evidence_is_rejected(service: AttestationService, tee_dir: Path) -> None:
    out = appraise_built(service, "wl-1", built(tee_dir, evidence="***"))
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.evidence.malformed"


def test_runner_measurement_is_not_an_enclave_reference_value(service: AttestationService) -> None:
    # registered for the build runner only: no workload may borrow it
    assert "snp_launch_measurement" not in service.reference_values.values_for("wl-1")


def test_unregistered_runner_code_is_rejected(tee_dir: Path) -> None:
    bare = AttestationService.for_data_dir(tee_dir, allow_emulated=True)
    out = appraise_built(bare, "wl-1", built(tee_dir))
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.policy.contraindicated"
    assert out.payload.ear_token and out.payload.trust_vector and out.payload.trust_vector["executables"] == 33
    assert out.payload.tcb and out.payload.measurement
    assert base64.b64decode(out.payload.evidence or "")
