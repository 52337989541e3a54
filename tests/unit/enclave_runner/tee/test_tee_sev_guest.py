"""/dev/sev-guest: struct packing, the ioctl number, and the response handling, with the ioctl simulated."""

from __future__ import annotations

import ctypes
import errno
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.errors import BackendUnavailable, DeviceError, FirmwareError
from ccpipe.enclave_runner.tee.sev_guest import (
    SNP_GET_REPORT,
    SevGuestBackend,
    SnpGuestRequestIoctl,
    SnpReportReq,
    SnpReportResp,
    parse_report_response,
)
from ccpipe.evidence.errors import HostDataMismatch, MalformedEvidence
from ccpipe.evidence.snp_evidence import parse_snp_evidence
from ccpipe.schemas.errors import TransientError


def test_structs_match_the_kernel_uapi() -> None:
    assert ctypes.sizeof(SnpReportReq) == 96
    assert (SnpReportReq.user_data.offset, SnpReportReq.vmpl.offset, SnpReportReq.rsvd.offset) == (0, 64, 68)
    assert ctypes.sizeof(SnpReportResp) == 4000
    assert ctypes.sizeof(SnpGuestRequestIoctl) == 32
    offsets = [getattr(SnpGuestRequestIoctl, f).offset for f in ("msg_version", "req_data", "resp_data", "exitinfo2")]
    assert offsets == [0, 8, 16, 24]
    assert SNP_GET_REPORT == 0xC0205300  # _IOWR('S', 0, 32 bytes)


class FakeFirmware:
    """Plays the kernel: reads the request through the pointers it was given, writes a MSG_REPORT_RSP."""

    def __init__(self, backend: EmulatedSnpBackend, status: int = 0, error: OSError | None = None, exitinfo2: int = 0):
        self.backend, self.status, self.error, self.exitinfo2 = backend, status, error, exitinfo2
        self.seen: list[tuple[int, int, bytes]] = []

    def __call__(self, fd: int, request: int, arg: Any) -> None:
        assert request == SNP_GET_REPORT and isinstance(arg, SnpGuestRequestIoctl) and arg.msg_version == 1
        req = SnpReportReq.from_address(arg.req_data)
        self.seen.append((fd, req.vmpl, bytes(req.user_data)))
        if self.error is not None:
            arg.exitinfo2 = self.exitinfo2
            raise self.error
        report = self.backend.report(bytes(req.user_data)).serialize()
        rsp = struct.pack("<II", self.status, len(report)) + bytes(24) + report
        ctypes.memmove(arg.resp_data, rsp, len(rsp))


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


def test_report_through_the_ioctl(device: Path, snp_backend: EmulatedSnpBackend) -> None:
    firmware = FakeFirmware(snp_backend)
    result = SevGuestBackend(device, vmpl=0, ioctl=firmware).get_evidence(b"\x09" * 48)
    assert firmware.seen[0][1:] == (0, b"\x09" * 48 + bytes(16))
    evidence = parse_snp_evidence(result.evidence)
    assert evidence.cert_chain is None and json.loads(result.evidence)["cert_chain"] is None
    assert evidence.report.report_data == result.report_data == b"\x09" * 48 + bytes(16)
    assert (result.backend, result.emulated, result.product) == ("sev-guest", False, "AMD SEV-SNP Genoa")


def test_vmpl_is_passed(device: Path, snp_backend: EmulatedSnpBackend) -> None:
    firmware = FakeFirmware(snp_backend)
    SevGuestBackend(device, vmpl=2, ioctl=firmware).request_report(b"")
    assert firmware.seen[0][1] == 2


def test_host_data_mismatch(device: Path, snp_backend: EmulatedSnpBackend) -> None:
    backend = SevGuestBackend(device, ioctl=FakeFirmware(snp_backend))
    backend.get_evidence(b"", host_data=b"\x11" * 32)
    with pytest.raises(HostDataMismatch):
        backend.get_evidence(b"", host_data=b"\x00" * 32)


def test_firmware_status_is_an_error(device: Path, snp_backend: EmulatedSnpBackend) -> None:
    with pytest.raises(FirmwareError, match="status 0x16"):
        SevGuestBackend(device, ioctl=FakeFirmware(snp_backend, status=0x16)).get_evidence(b"")


@pytest.mark.parametrize(
    ("err", "exitinfo2", "expected"),
    [
        (errno.EIO, 0x27, FirmwareError),
        (errno.EAGAIN, 0, DeviceError),
        (errno.ENOTTY, 0, BackendUnavailable),
    ],
)
def test_ioctl_failures(
    device: Path, snp_backend: EmulatedSnpBackend, err: int, exitinfo2: int, expected: type
) -> None:
    firmware = FakeFirmware(snp_backend, error=OSError(err, "boom"), exitinfo2=exitinfo2)
    with pytest.raises(expected, match=f"firmware error {exitinfo2:#x}"):
        SevGuestBackend(device, ioctl=firmware).get_evidence(b"")


def test_transient_device_error_is_retried_by_the_runtime(device: Path, snp_backend: EmulatedSnpBackend) -> None:
    firmware = FakeFirmware(snp_backend, error=OSError(errno.EBUSY, "busy"))
    with pytest.raises(TransientError):
        SevGuestBackend(device, ioctl=firmware).get_evidence(b"")


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="cannot open"):
        SevGuestBackend(tmp_path / "absent", ioctl=lambda *a: None).get_evidence(b"")


@pytest.mark.parametrize(
    "response",
    [struct.pack("<II", 0, 100) + bytes(3992), struct.pack("<II", 0, 4000) + bytes(3992)],
    ids=["too-small", "beyond-buffer"],
)
def test_bad_response_sizes(response: bytes) -> None:
    with pytest.raises(MalformedEvidence, match="announces"):
        parse_report_response(response)
