"""Backend selection and the sample TEE."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee import (
    BACKENDS,
    EmulatedSnpBackend,
    EmulatedTdxBackend,
    SampleBackend,
    select_backend,
)
from ccpipe.enclave_runner.tee.errors import BackendUnavailable
from ccpipe.evidence.errors import InvalidReportData
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.schemas.config import Settings
from ccpipe.schemas.spec_rules import TeeType


def test_auto_falls_back_to_emulated_snp(tee_data_dir: Path, tmp_path: Path) -> None:
    backend = select_backend(tee_data_dir, tsm_report_dir=tmp_path / "none", sev_guest_device=tmp_path / "none")
    assert isinstance(backend, EmulatedSnpBackend)
    assert backend.describe().emulated and backend.describe().tee == TeeType.SNP


def test_settings_data_dir_and_explicit_choices(tee_data_dir: Path) -> None:
    settings = Settings(data_dir=tee_data_dir)
    tdx = select_backend(settings, prefer="emulated-tdx", host_data=b"\x01" * 32)
    assert isinstance(tdx, EmulatedTdxBackend)
    assert tdx.quote(b"").td_body.mr_config_id == b"\x01" * 32 + bytes(16)
    snp = select_backend(settings, prefer="emulated-snp", host_data=b"\x02" * 32)
    assert isinstance(snp, EmulatedSnpBackend) and snp.report(b"").host_data == b"\x02" * 32
    assert isinstance(select_backend(settings, prefer="sample"), SampleBackend)
    for backend in (tdx, snp):
        assert isinstance(backend, EvidenceBackend)


@pytest.mark.parametrize("prefer", ["configfs-tsm", "sev-guest"])
def test_absent_hardware_is_refused(tmp_path: Path, prefer: str) -> None:
    with pytest.raises(BackendUnavailable, match="does not exist"):
        select_backend(tmp_path, prefer=prefer, tsm_report_dir=tmp_path / "x", sev_guest_device=tmp_path / "y")


def test_unknown_backend_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="unknown evidence backend 'tpm'") as info:
        select_backend(tmp_path, prefer="tpm")
    assert all(name in info.value.hint for name in BACKENDS) and info.value.code == "tee.backend.unknown"


def test_sample_evidence_is_trustees_format_unpadded() -> None:
    digest = bytes(range(48))
    result = SampleBackend().get_evidence(digest)
    assert json.loads(result.evidence) == {"svn": "1", "report_data": base64.b64encode(digest).decode()}
    assert result.report_data == digest and result.tee == TeeType.SAMPLE
    assert (result.backend, result.emulated) == ("sample", True)
    assert result.to_event_evidence().report_data == digest.hex()


def test_sample_refuses_oversized_report_data() -> None:
    with pytest.raises(InvalidReportData, match="65 bytes"):
        SampleBackend().get_evidence(bytes(65))
    with pytest.raises(InvalidReportData, match="must be bytes"):
        SampleBackend().get_evidence("text")  # type: ignore[arg-type]
