"""Emulated evidence made on another host is verified only once the admin vouched for that host's roots.

Two data directories stand in for two machines: a runner host whose emulated backends made their
own roots, and a verifier host that never saw them. The runner's public roots travel in its
admin-signed enrolment record; the verifier's mirror writes them where the verifiers read them.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.evidence.emulated_roots import pki_dir
from ccpipe.evidence.enrolled_roots import (
    decode_public_roots,
    export_public_roots,
    replace_vouched_roots,
    vouched_root_dirs,
)
from ccpipe.evidence.measurement import launch_measurement_for, tdx_measurements_for
from ccpipe.pipeline.enrolment import EnrolmentError, enrolled_keys, new_record, open_record, sign_record
from ccpipe.pipeline.enrolment_bus import enrolment_token, parse_enrolment_token
from ccpipe.pipeline.event_signature import ComponentKey
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.rvps import sample_message

RD = bytes(range(48))
WL = "wl-vouched"


@pytest.fixture
def runner_host(tmp_path: Path, _emulated_template: Path) -> Path:
    """Another machine's data directory with emulated SNP and TDX roots of its own."""
    d = tmp_path / "runner-host"
    shutil.copytree(pki_dir(_emulated_template), pki_dir(d))
    return d


@pytest.fixture
def verifier_host(tmp_path: Path, runner_host: Path) -> Path:
    """A verifier's data directory with emulated roots of its own, different from the runner host's."""
    d = tmp_path / "verifier-host"
    select_backend(d, prefer="emulated-snp").get_evidence(bytes(64))
    assert (pki_dir(d) / "snp" / "ark.pem").read_bytes() != (pki_dir(runner_host) / "snp" / "ark.pem").read_bytes()
    return d


def _service(data_dir: Path) -> AttestationService:
    svc = AttestationService.for_data_dir(data_dir, allow_emulated=True)
    values = {"snp_launch_measurement": [launch_measurement_for().hex()],
              **{k: [v] for k, v in tdx_measurements_for().reference_values().items()}}
    svc.reference_values.register(sample_message(values), scope=WL)  # type: ignore[arg-type]
    return svc


def _request(evidence: bytes, tee: TeeType) -> AppraisalRequest:
    return AppraisalRequest(tee=tee, evidence=evidence, expected_report_data=RD, workload_id=WL)


def _vouch(verifier: Path, runner: Path, admin: Ed25519PrivateKey) -> None:
    """What ``admin public-key runner`` → ``admin enrol`` → the verifier's enrolment mirror do."""
    token = parse_enrolment_token(enrolment_token(runner, "runner", export_public_roots(runner)), "runner")
    record = new_record("runner", token.public_key, admin.public_key().public_bytes_raw(), None,
                        token.emulated_roots)
    blob = sign_record(record, admin)
    found = enrolled_keys([blob], admin.public_key().public_bytes_raw())
    replace_vouched_roots(verifier, {n: decode_public_roots(f, n) for n, f in found.emulated_roots.items()})


def test_another_hosts_emulated_evidence_verifies_only_after_its_roots_are_vouched(
    runner_host: Path, verifier_host: Path
) -> None:
    snp = select_backend(runner_host, prefer="emulated-snp").get_evidence(RD).evidence
    tdx = select_backend(runner_host, prefer="emulated-tdx").get_evidence(RD).evidence
    svc = _service(verifier_host)
    for evidence, tee in ((snp, TeeType.SNP), (tdx, TeeType.TDX)):
        refused = svc.appraise(_request(evidence, tee))
        assert not refused.ok and refused.rejection is not None
        assert refused.rejection.code == "attest.evidence.chain", refused.rejection

    admin = Ed25519PrivateKey.generate()
    _vouch(verifier_host, runner_host, admin)
    assert [p.name.split("-")[0] for p in vouched_root_dirs(verifier_host)] == ["runner"]
    assert not any(p.suffix == ".key" for p in vouched_root_dirs(verifier_host)[0].rglob("*"))  # public half only
    for evidence, tee in ((snp, TeeType.SNP), (tdx, TeeType.TDX)):
        accepted = svc.appraise(_request(evidence, tee))  # the same service: it notices the new roots
        assert accepted.ok and accepted.emulated, accepted.rejection
    assert svc.appraise(_request(tdx, TeeType.TDX)).claims["tcb"]["tcb_status"] == "UpToDate"
    # the verifier's own emulated backend still verifies beside the vouched host
    own = select_backend(verifier_host, prefer="emulated-snp").get_evidence(RD).evidence
    assert svc.appraise(_request(own, TeeType.SNP)).ok

    replace_vouched_roots(verifier_host, {})  # the enrolment revoked: the mirror removes its roots
    again = svc.appraise(_request(snp, TeeType.SNP))
    assert not again.ok


def test_a_record_cannot_carry_private_keys_or_roots_for_a_component_without_evidence(runner_host: Path) -> None:
    admin = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    public = ComponentKey.generate("runner").public_key
    roots = export_public_roots(runner_host)
    assert roots and all(not name.endswith(".key") for name in roots)
    private = base64.b64encode((pki_dir(runner_host) / "snp" / "ark.key").read_bytes()).decode()
    with_key = {**roots, "snp/ark.key": private}
    with pytest.raises(EnrolmentError, match="snp/ark.key.*not a public emulated root file"):
        new_record("runner", public, admin, None, with_key)
    with pytest.raises(EnrolmentError, match="produces no TEE evidence"):
        new_record("push", ComponentKey.generate("push").public_key, admin, None, roots)
    with pytest.raises(InvalidInput, match="emulated roots of runner are not what"):
        parse_enrolment_token(enrolment_token(runner_host, "runner") + ",roots=%%%", "runner")
    with pytest.raises(InvalidInput, match="not a vouched root name"):
        replace_vouched_roots(runner_host, {"../../etc": {}})


def test_a_tampered_record_carrying_other_roots_is_refused(runner_host: Path) -> None:
    admin = Ed25519PrivateKey.generate()
    record = new_record("runner", ComponentKey.generate("runner").public_key, admin.public_key().public_bytes_raw(),
                        None, export_public_roots(runner_host))
    blob = sign_record(record, admin)
    forged = blob.replace(b"snp/ark.pem\": \"", b"snp/ark.pem\": \"AAAA")
    assert forged != blob
    with pytest.raises(EnrolmentError, match="not signed by the pinned admin key"):
        open_record(forged, admin.public_key().public_bytes_raw())
