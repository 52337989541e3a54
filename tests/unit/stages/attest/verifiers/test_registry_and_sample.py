"""The verifier registry and the sample TEE: development evidence only when configured."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import EmulatedNotAllowed, EvidenceMalformed, ReportDataMismatch, UnknownTeeType
from ccpipe.stages.attest.verifiers import Binding, Verifier, VerifierConfig, registry, verifier_for
from ccpipe.stages.attest.verifiers.emulated import NO_EMULATED_ROOTS, emulated_roots_in
from ccpipe.stages.attest.verifiers.sample import SampleVerifier
from ccpipe.stages.attest.verifiers.snp import SnpVerifier
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier

DIGEST = hashlib.sha384(b'{"additional-evidence":"","nonce":"n","tee-pubkey":{}}').digest()
SAMPLE = json.dumps({"svn": "1", "report_data": base64.b64encode(DIGEST).decode()}).encode()
DEV = VerifierConfig(allow_emulated=True)


def test_registry_lists_hardware_only_by_default() -> None:
    assert set(registry(VerifierConfig())) == {TeeType.SNP, TeeType.TDX}
    assert set(registry(DEV)) == {TeeType.SNP, TeeType.TDX, TeeType.SAMPLE}


@pytest.mark.parametrize(("tee", "cls"), [("snp", SnpVerifier), (TeeType.TDX, TdxVerifier)])
def test_verifier_for_builds_the_right_verifier(tee: str, cls: type) -> None:
    v = verifier_for(tee, VerifierConfig())
    assert isinstance(v, cls) and isinstance(v, Verifier)


def test_unknown_tee_names_the_accepted_types() -> None:
    with pytest.raises(UnknownTeeType, match="accepted types: snp, tdx"):
        verifier_for("cca", VerifierConfig())
    with pytest.raises(UnknownTeeType, match="sgx"):
        verifier_for("sgx", VerifierConfig())


def test_sample_is_not_registered_unless_allowed() -> None:
    with pytest.raises(UnknownTeeType, match="development evidence is not allowed"):
        verifier_for("sample", VerifierConfig())


def test_sample_evidence_verifies_and_is_marked_emulated() -> None:
    claims = verifier_for("sample", DEV).verify(SAMPLE, Binding(report_data=DIGEST))
    assert claims.emulated is True and claims.fields["emulated"] is True
    assert claims.tee is TeeType.SAMPLE
    assert claims.fields["launch_digest"] == "abcde"


def test_sample_report_data_must_match_exactly() -> None:
    with pytest.raises(ReportDataMismatch):
        verifier_for("sample", DEV).verify(SAMPLE, Binding(report_data=DIGEST[:-1] + b"\0"))
    # No zero padding for the sample TEE: a 64-byte padded value is another value.
    with pytest.raises(ReportDataMismatch):
        verifier_for("sample", DEV).verify(SAMPLE, Binding(report_data=DIGEST + bytes(16)))


def test_sample_verifier_refuses_when_built_directly_without_permission() -> None:
    with pytest.raises(EmulatedNotAllowed):
        SampleVerifier(VerifierConfig()).verify(SAMPLE, Binding(report_data=DIGEST))


@pytest.mark.parametrize("evidence", [b"", b"{}", b'{"svn": "1"}', b'{"svn":"1","report_data":"%%"}', b"\xff"])
def test_malformed_sample_evidence(evidence: bytes) -> None:
    with pytest.raises(EvidenceMalformed):
        verifier_for("sample", DEV).verify(evidence, Binding(report_data=DIGEST))


def test_no_emulated_roots_without_an_emulated_pki(tmp_path: Path) -> None:
    assert emulated_roots_in(None) == NO_EMULATED_ROOTS
    assert emulated_roots_in(tmp_path) == NO_EMULATED_ROOTS
    assert not any(tmp_path.iterdir()), "reading the roots must never create them"
