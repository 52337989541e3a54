"""Emulated SEV-SNP evidence: parsed by the same parser as real reports, signed, chained, bound."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ccpipe.enclave_runner.tee.emulated_pki import emulated_anchors
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.errors import InvalidReportData
from ccpipe.evidence.initdata import initdata_digest, make_initdata, snp_host_data
from ccpipe.evidence.measurement import launch_measurement_for
from ccpipe.evidence.snp_evidence import parse_snp_evidence
from ccpipe.evidence.snp_report import parse_snp_report
from ccpipe.schemas.events import Evidence
from ccpipe.schemas.spec_rules import TeeType
from tests.unit.evidence.evidence_helpers import anchor_cert, verify_pss, verify_snp_signature

NONCE_DIGEST = bytes(range(48))


def test_evidence_is_trustee_snp_json(snp_backend: EmulatedSnpBackend) -> None:
    result = snp_backend.get_evidence(NONCE_DIGEST)
    doc = json.loads(result.evidence)
    assert set(doc) == {"attestation_report", "cert_chain"}
    assert [c["cert_type"] for c in doc["cert_chain"]] == ["VCEK", "ASK", "ARK"]
    assert isinstance(doc["attestation_report"]["report_data"], list)
    assert (result.tee, result.backend, result.emulated) == (TeeType.SNP, "emulated", True)
    assert result.report_data == NONCE_DIGEST + bytes(16)


def test_report_is_signed_by_the_vcek_that_chains_to_the_emulated_ark(
    tee_data_dir: Path, snp_backend: EmulatedSnpBackend
) -> None:
    evidence = parse_snp_evidence(snp_backend.get_evidence(NONCE_DIGEST).evidence)
    raw = evidence.report.serialize()
    assert parse_snp_report(raw) == evidence.report
    vcek = x509.load_der_x509_certificate(evidence.certificate("VCEK") or b"")
    ask = x509.load_der_x509_certificate(evidence.certificate("ASK") or b"")
    ark = anchor_cert(emulated_anchors(tee_data_dir).snp_ark_pem)
    verify_snp_signature(raw, vcek)
    verify_pss(vcek, ask)
    verify_pss(ask, ark)
    assert x509.load_der_x509_certificate(evidence.certificate("ARK") or b"") == ark


def test_report_binds_report_data_and_host_data(snp_backend: EmulatedSnpBackend) -> None:
    report = snp_backend.report(NONCE_DIGEST)
    assert report.report_data == NONCE_DIGEST + bytes(16)
    assert report.host_data == b"\x11" * 32  # the launch's host data
    assert snp_backend.report(b"", host_data=b"\x33" * 32).host_data == b"\x33" * 32


def test_tampered_report_data_fails_the_signature(tee_data_dir: Path, snp_backend: EmulatedSnpBackend) -> None:
    raw = bytearray(snp_backend.report(NONCE_DIGEST).serialize())
    raw[0x50] ^= 1
    vcek = x509.load_pem_x509_certificate((tee_data_dir / "tee/emulated/snp/vcek.pem").read_bytes())
    with pytest.raises(InvalidSignature):
        verify_snp_signature(bytes(raw), vcek)


def test_report_is_a_production_shaped_genoa_v3(snp_backend: EmulatedSnpBackend) -> None:
    r = snp_backend.report(NONCE_DIGEST)
    assert (r.version, r.vmpl, r.signature_algo, r.signing_key) == (3, 0, 1, 0)
    assert not r.debug_allowed and not r.migrate_ma_allowed and r.smt_allowed
    assert r.product == "Genoa" and r.reported_tcb == r.current_tcb == r.committed_tcb == r.launch_tcb
    assert r.report_id_ma == b"\xff" * 32


def test_measurement_is_the_published_reference_value(tee_data_dir: Path) -> None:
    backend = EmulatedSnpBackend(tee_data_dir, config={"vcpus": 2})
    assert backend.measurement == launch_measurement_for({"vcpus": 2})
    assert backend.report(b"").measurement == backend.measurement
    assert EmulatedSnpBackend(tee_data_dir, config={"vcpus": 4}).measurement != backend.measurement


def test_initdata_digest_lands_in_host_data(tee_data_dir: Path) -> None:
    text = make_initdata("http://127.0.0.1:8080", "sha256:" + "ab" * 32, "kbs:///default/security-policy/x")
    backend = EmulatedSnpBackend(tee_data_dir, host_data=initdata_digest(text))
    assert backend.report(b"").host_data == snp_host_data(initdata_digest(text))


def test_each_report_is_freshly_signed(snp_backend: EmulatedSnpBackend) -> None:
    a, b = snp_backend.report(NONCE_DIGEST), snp_backend.report(NONCE_DIGEST)
    assert a.signed_portion() == b.signed_portion() and a.signature_r != b.signature_r  # ECDSA is randomized


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"report_data": b"x" * 65}, "report_data"), ({"host_data": b"x" * 33}, "host_data")]
)
def test_oversized_inputs_are_refused(snp_backend: EmulatedSnpBackend, kwargs: dict[str, bytes], field: str) -> None:
    args = {"report_data": b"", **kwargs}
    with pytest.raises(InvalidReportData, match=field):
        snp_backend.get_evidence(args.pop("report_data"), **args)


def test_event_payload_validates(snp_backend: EmulatedSnpBackend) -> None:
    result = snp_backend.get_evidence(NONCE_DIGEST)
    event = result.to_event_evidence()
    assert isinstance(event, Evidence)
    assert base64.b64decode(event.evidence) == result.evidence
    assert event.report_data == result.report_data.hex() and event.backend == "emulated" and event.emulated
    assert Evidence.model_validate_json(event.model_dump_json()) == event
