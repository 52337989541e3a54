"""configfs-tsm against a directory laid out like /sys/kernel/config/tsm/report, the kernel simulated.

The fake kernel runs the real file operations (``OsTsmFs``) on a temporary directory and adds
what configfs does on its own: populating a new entry, bumping ``generation`` on every write,
producing ``outblob``/``auxblob`` (real-format reports from the emulated backends) for ``inblob``.
"""

from __future__ import annotations

import base64
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.enclave_runner.tee.configfs_tsm import ConfigfsTsmBackend, OsTsmFs
from ccpipe.enclave_runner.tee.emulated_pki import snp_store
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.enclave_runner.tee.errors import BackendUnavailable, ConcurrentReportWriter, DeviceError, UnknownProvider
from ccpipe.evidence.errors import HostDataMismatch, MalformedEvidence
from ccpipe.evidence.snp_evidence import CertTableEntry, parse_snp_evidence, serialize_cert_table
from ccpipe.evidence.tdx_quote import parse_tdx_evidence, parse_tdx_quote
from ccpipe.schemas.errors import TransientError
from ccpipe.schemas.spec_rules import TeeType

Produce = Callable[[bytes], tuple[bytes, bytes | None]]


class FakeKernel(OsTsmFs):
    """Real file operations plus the side effects of the configfs-tsm kernel code."""

    def __init__(self, provider: str, produce: Produce) -> None:
        self.provider, self.produce = provider, produce
        self.entries: list[Path] = []
        self.writes: list[tuple[str, bytes]] = []
        self.interfere_with: set[int] = set()  # indexes of entries another writer touches
        self.fail_read: dict[str, OSError] = {}

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.entries.append(path)
        (path / "provider").write_text(f"{self.provider}\n")
        (path / "generation").write_text("0\n")
        for name in ("inblob", "privlevel"):
            (path / name).write_bytes(b"")

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        self.writes.append((path.name, data))
        entry = path.parent
        generation = int((entry / "generation").read_text()) + 1
        (entry / "generation").write_text(f"{generation}\n")
        if path.name == "inblob":
            outblob, auxblob = self.produce(data)
            (entry / "outblob").write_bytes(outblob)
            if auxblob is not None:
                (entry / "auxblob").write_bytes(auxblob)

    def read(self, path: Path) -> bytes:
        if path.name in self.fail_read:
            raise self.fail_read[path.name]
        data = super().read(path)
        if path.name == "outblob" and self.entries.index(path.parent) in self.interfere_with:
            gen = path.parent / "generation"  # someone else writes inblob right after our write
            gen.write_text(f"{int(gen.read_text()) + 1}\n")
        return data

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sys/kernel/config/tsm/report"
    d.mkdir(parents=True)
    return d


@pytest.fixture(scope="module")
def snp_produce(tee_data_dir: Path, snp_backend: EmulatedSnpBackend) -> Produce:
    store = snp_store(tee_data_dir)
    table = serialize_cert_table(
        [CertTableEntry(t, store.cert(s).public_bytes(Encoding.DER)) for t, s in (("VCEK", "vcek"), ("ASK", "ask"))]
    )
    return lambda inblob: (snp_backend.report(inblob).serialize(), table)


@pytest.fixture(scope="module")
def tdx_produce(tdx_backend: EmulatedTdxBackend) -> Produce:
    return lambda inblob: (tdx_backend.quote(inblob).serialize(), None)


def test_snp_report_through_configfs(report_dir: Path, snp_produce: Produce) -> None:
    kernel = FakeKernel("sev_guest", snp_produce)
    backend = ConfigfsTsmBackend(report_dir, fs=kernel)
    result = backend.get_evidence(b"\x07" * 48)
    assert (result.tee, result.backend, result.emulated) == (TeeType.SNP, "configfs-tsm", False)
    assert result.product == "AMD SEV-SNP Genoa"
    evidence = parse_snp_evidence(result.evidence)
    assert evidence.report.report_data == b"\x07" * 48 + bytes(16) == result.report_data
    assert [c.cert_type for c in evidence.cert_chain or ()] == ["VCEK", "ASK"]
    assert kernel.writes == [("inblob", b"\x07" * 48 + bytes(16))]
    assert list(report_dir.iterdir()) == []  # the entry was removed


def test_tdx_quote_through_configfs_with_event_log(report_dir: Path, tdx_produce: Produce, tmp_path: Path) -> None:
    ccel = tmp_path / "CCEL"
    ccel.write_bytes(b"event log bytes")
    backend = ConfigfsTsmBackend(report_dir, fs=FakeKernel("tdx_guest", tdx_produce), ccel_path=ccel)
    result = backend.get_evidence(b"\x08" * 64)
    doc = json.loads(result.evidence)
    assert base64.b64decode(doc["cc_eventlog"]) == b"event log bytes"
    quote = parse_tdx_quote(parse_tdx_evidence(result.evidence).quote)
    assert quote.td_body.report_data == b"\x08" * 64 and result.tee == TeeType.TDX
    missing = ConfigfsTsmBackend(report_dir, fs=FakeKernel("tdx_guest", tdx_produce), ccel_path=tmp_path / "none")
    assert json.loads(missing.get_evidence(b"").evidence)["cc_eventlog"] is None


@pytest.mark.parametrize(("provider", "tee"), [("sev_guest", TeeType.SNP), ("tdx_guest", TeeType.TDX)])
def test_describe_reads_the_provider(report_dir: Path, provider: str, tee: TeeType) -> None:
    info = ConfigfsTsmBackend(report_dir, fs=FakeKernel(provider, lambda b: (b, None))).describe()
    assert (info.tee, info.backend, info.emulated) == (tee, "configfs-tsm", False)
    assert list(report_dir.iterdir()) == []


def test_unknown_provider_is_refused(report_dir: Path) -> None:
    backend = ConfigfsTsmBackend(report_dir, fs=FakeKernel("arm_cca_guest", lambda b: (b, None)))
    with pytest.raises(UnknownProvider, match="arm_cca_guest"):
        backend.describe()
    with pytest.raises(UnknownProvider):
        backend.get_evidence(b"")


def test_concurrent_writer_is_detected_and_retried_with_a_fresh_entry(report_dir: Path, snp_produce: Produce) -> None:
    kernel = FakeKernel("sev_guest", snp_produce)
    kernel.interfere_with = {0}
    result = ConfigfsTsmBackend(report_dir, fs=kernel).get_evidence(b"\x01")
    assert len(kernel.entries) == 2 and kernel.entries[0] != kernel.entries[1]
    assert parse_snp_evidence(result.evidence).report.report_data[0] == 1


def test_persistent_concurrent_writer_fails_after_the_attempts(report_dir: Path, snp_produce: Produce) -> None:
    kernel = FakeKernel("sev_guest", snp_produce)
    kernel.interfere_with = {0, 1, 2, 3}
    with pytest.raises(ConcurrentReportWriter, match="generation was 2 while reading outblob, expected 1") as info:
        ConfigfsTsmBackend(report_dir, fs=kernel, attempts=3).get_evidence(b"")
    assert isinstance(info.value, TransientError)
    assert len(kernel.entries) == 3 and list(report_dir.iterdir()) == []


def test_privlevel_is_written_and_counted_in_the_generation(report_dir: Path, snp_produce: Produce) -> None:
    kernel = FakeKernel("sev_guest", snp_produce)
    ConfigfsTsmBackend(report_dir, fs=kernel, privlevel=0).get_evidence(b"")
    assert [name for name, _ in kernel.writes] == ["privlevel", "inblob"]


def test_missing_auxblob_means_no_cert_chain(report_dir: Path, snp_backend: EmulatedSnpBackend) -> None:
    kernel = FakeKernel("sev_guest", lambda b: (snp_backend.report(b).serialize(), None))
    assert json.loads(ConfigfsTsmBackend(report_dir, fs=kernel).get_evidence(b"").evidence)["cert_chain"] is None


def test_host_data_is_checked_not_chosen(report_dir: Path, snp_produce: Produce) -> None:
    backend = ConfigfsTsmBackend(report_dir, fs=FakeKernel("sev_guest", snp_produce))
    backend.get_evidence(b"", host_data=b"\x11" * 32)  # the launch's host data (see conftest)
    with pytest.raises(HostDataMismatch, match="HOST_DATA"):
        backend.get_evidence(b"", host_data=b"\x12" * 32)


def test_tdx_mr_config_id_is_checked(report_dir: Path, tdx_produce: Produce) -> None:
    backend = ConfigfsTsmBackend(report_dir, fs=FakeKernel("tdx_guest", tdx_produce), ccel_path=None)
    backend.get_evidence(b"", host_data=b"\x22" * 32)
    with pytest.raises(HostDataMismatch, match="MRCONFIGID"):
        backend.get_evidence(b"", host_data=b"\x23" * 32)


def test_garbage_from_the_kernel_is_malformed(report_dir: Path) -> None:
    backend = ConfigfsTsmBackend(report_dir, fs=FakeKernel("sev_guest", lambda b: (b"garbage", None)))
    with pytest.raises(MalformedEvidence, match="1184 bytes"):
        backend.get_evidence(b"")


def test_io_errors_are_transient_and_missing_interface_is_permanent(report_dir: Path, snp_produce: Produce) -> None:
    kernel = FakeKernel("sev_guest", snp_produce)
    kernel.fail_read["outblob"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(DeviceError, match="outblob"):
        ConfigfsTsmBackend(report_dir, fs=kernel).get_evidence(b"")
    assert list(report_dir.iterdir()) == []
    with pytest.raises(BackendUnavailable, match="does not exist"):
        ConfigfsTsmBackend(report_dir / "missing").get_evidence(b"")


def test_oversized_report_data_is_refused_before_touching_configfs(report_dir: Path) -> None:
    from ccpipe.evidence.errors import InvalidReportData

    kernel = FakeKernel("sev_guest", lambda b: (b, None))
    with pytest.raises(InvalidReportData):
        ConfigfsTsmBackend(report_dir, fs=kernel).get_evidence(bytes(65))
    assert kernel.entries == []


def test_real_filesystem_write_is_one_write_call(tmp_path: Path) -> None:
    target = tmp_path / "inblob"
    target.write_bytes(b"")
    OsTsmFs().write(target, b"abc")
    assert target.read_bytes() == b"abc"
    with pytest.raises(OSError):
        OsTsmFs().write(tmp_path / "absent", b"x")


def test_auto_selection_prefers_configfs_tsm(report_dir: Path, tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    backend = select_backend(tmp_path, tsm_report_dir=report_dir, sev_guest_device=device)
    assert isinstance(backend, ConfigfsTsmBackend) and backend.report_dir == report_dir
    os.rmdir(report_dir)
    assert (
        type(select_backend(tmp_path, tsm_report_dir=report_dir, sev_guest_device=device)).__name__ == "SevGuestBackend"
    )
