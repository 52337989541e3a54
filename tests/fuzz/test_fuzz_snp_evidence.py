"""Fuzz: SEV-SNP evidence as an enclave sends it to the KBS.

The binary report, the kernel's certificate table, Trustee's evidence JSON, and the whole
verifier on top (report, VCEK/ASK/ARK certificates, signature, policy). The format parsers raise
only :class:`TeeError` leaves (``MalformedEvidence``/``UnsupportedEvidence``); the verifier only
:class:`AttestationError` leaves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.evidence.errors import TeeError
from ccpipe.evidence.snp_evidence import CertTableEntry, parse_cert_table, parse_snp_evidence, serialize_cert_table
from ccpipe.evidence.snp_report import parse_snp_report
from ccpipe.stages.attest.errors import AttestationError
from ccpipe.stages.attest.verifiers import Binding, VerifierConfig
from ccpipe.stages.attest.verifiers.snp import SnpVerifier
from tests.conftest import vector
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, json_bytes_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

REPORTS = [vector(*p).read_bytes() for p in (("go-sev-guest", "attestation.bin"), ("trustee", "snp/test-report.bin"),
                                             ("trustee", "snp-e2e/e2e-snp-genoa-report.bin"))]
EVIDENCE_JSON = json.loads(vector("trustee", "snp-e2e/evidence.json").read_bytes())
VCEK = vector("trustee", "snp-e2e/e2e-snp-genoa-vcek.der").read_bytes()
CERT_TABLE = serialize_cert_table([CertTableEntry("VCEK", VCEK), CertTableEntry("ARK", b"\x30\x03\x02\x01\x01")])
REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)

RAW_REPORTS = st.sampled_from(REPORTS).flatmap(byte_mutations)


@fuzz_settings()
@given(RAW_REPORTS)
def test_fuzz_snp_report_parses_or_raises_tee_error(raw: bytes) -> None:
    parses_or_refuses(parse_snp_report, raw, TeeError)


@fuzz_settings()
@given(byte_mutations(CERT_TABLE))
def test_fuzz_snp_cert_table_parses_or_raises_tee_error(table: bytes) -> None:
    parses_or_refuses(parse_cert_table, table, TeeError)


@fuzz_settings()
@given(json_bytes_mutations(EVIDENCE_JSON))
def test_fuzz_snp_evidence_json_parses_or_raises_tee_error(data: bytes) -> None:
    parses_or_refuses(parse_snp_evidence, data, TeeError)


VERIFIER = SnpVerifier(VerifierConfig(now=datetime(2026, 6, 1, tzinfo=UTC)))


@fuzz_settings(deadline_ms=5000)
@given(st.one_of(json_bytes_mutations(EVIDENCE_JSON), RAW_REPORTS))
def test_fuzz_snp_verifier_verifies_or_raises_attestation_error(evidence: bytes) -> None:
    parses_or_refuses(lambda e: VERIFIER.verify(e, Binding(report_data=REPORT_DATA)), evidence, AttestationError)
