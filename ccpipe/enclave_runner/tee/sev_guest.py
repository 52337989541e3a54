"""Hardware SEV-SNP evidence through ``/dev/sev-guest`` (for kernels without configfs-tsm).

The ``SNP_GET_REPORT`` ioctl (Linux ``include/uapi/linux/sev-guest.h``)::

    struct snp_report_req          { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; }        96 bytes
    struct snp_report_resp         { u8 data[4000]; }                                  4000 bytes
    struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data;
                                     u64 exitinfo2; /* fw_error low 32, vmm_error high 32 */ }
                                                                         32 bytes (u64-aligned)
    SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl) = 0xC0205300

The response data is the firmware's MSG_REPORT_RSP: ``status`` (u32, 0 = success),
``report_size`` (u32), 24 reserved bytes, then the report at 0x20.

This interface returns no certificates, so the evidence's ``cert_chain`` is null and the
verifier fetches the VCEK (AMD KDS or an offline store) from the report's chip id and TCB.
Only the struct packing and the response parsing can be tested without SEV-SNP hardware; the
``ioctl`` callable is a parameter for that reason.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccpipe.enclave_runner.tee.errors import BackendUnavailable, DeviceError, FirmwareError
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.interface import (
    REPORT_DATA_SIZE,
    BackendInfo,
    EvidenceResult,
    check_host_data,
    pad_field,
)
from ccpipe.evidence.snp_evidence import SnpEvidence
from ccpipe.evidence.snp_report import REPORT_SIZE, parse_snp_report
from ccpipe.schemas.spec_rules import TeeType

SEV_GUEST_DEVICE = Path("/dev/sev-guest")
MSG_VERSION = 1
REPORT_RSP_HEADER = 0x20


class SnpReportReq(ctypes.Structure):
    """``struct snp_report_req``."""

    _fields_ = [("user_data", ctypes.c_uint8 * 64), ("vmpl", ctypes.c_uint32), ("rsvd", ctypes.c_uint8 * 28)]


class SnpReportResp(ctypes.Structure):
    """``struct snp_report_resp``."""

    _fields_ = [("data", ctypes.c_uint8 * 4000)]


class SnpGuestRequestIoctl(ctypes.Structure):
    """``struct snp_guest_request_ioctl`` (natural alignment: u64 fields at 8, 16, 24)."""

    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    ]


def _iowr(kind: int, nr: int, size: int) -> int:
    """Linux ``_IOWR``: direction read|write (3) << 30, size << 16, type << 8, number."""
    return (3 << 30) | (size << 16) | (kind << 8) | nr


SNP_GET_REPORT = _iowr(ord("S"), 0x0, ctypes.sizeof(SnpGuestRequestIoctl))

IoctlFn = Callable[[int, int, Any], Any]


def parse_report_response(data: bytes) -> bytes:
    """The report inside a MSG_REPORT_RSP.

    Raises :class:`FirmwareError` for a non-zero status and :class:`MalformedEvidence` if the
    size does not describe a whole report inside ``data``.
    """
    status, size = struct.unpack_from("<II", data, 0)
    if status != 0:
        raise FirmwareError(f"SEV-SNP firmware refused the report request: status {status:#x}")
    if size < REPORT_SIZE or REPORT_RSP_HEADER + size > len(data):
        raise MalformedEvidence(f"SEV-SNP report response announces {size} bytes, expected at least {REPORT_SIZE}")
    return bytes(data[REPORT_RSP_HEADER : REPORT_RSP_HEADER + REPORT_SIZE])


class SevGuestBackend:
    """Evidence from ``/dev/sev-guest`` (SNP_GET_REPORT)."""

    def __init__(self, device: Path = SEV_GUEST_DEVICE, *, vmpl: int = 0, ioctl: IoctlFn = fcntl.ioctl) -> None:
        """Use ``device`` and request reports at ``vmpl`` (Trustee requires VMPL 0)."""
        self.device = Path(device)
        self._vmpl = vmpl
        self._ioctl = ioctl
        self._info = BackendInfo(TeeType.SNP, "sev-guest", False, "AMD SEV-SNP")

    def describe(self) -> BackendInfo:
        """Hardware SEV-SNP."""
        return self._info

    def request_report(self, report_data: bytes) -> bytes:
        """The raw report for exactly 64 bytes of ``report_data``.

        Raises :class:`BackendUnavailable` (no device, no permission, not a SNP guest),
        :class:`FirmwareError`, :class:`DeviceError` (other ioctl failures; retried).
        """
        req = SnpReportReq()
        req.user_data[:] = pad_field(report_data, REPORT_DATA_SIZE, "report_data")
        req.vmpl = self._vmpl
        resp = SnpReportResp()
        arg = SnpGuestRequestIoctl(MSG_VERSION, ctypes.addressof(req), ctypes.addressof(resp), 0)
        try:
            fd = os.open(self.device, os.O_RDWR)
        except OSError as exc:
            raise BackendUnavailable(f"cannot open {self.device}: {exc}") from exc
        try:
            self._ioctl(fd, SNP_GET_REPORT, arg)
        except OSError as exc:
            fw_error, vmm_error = arg.exitinfo2 & 0xFFFFFFFF, arg.exitinfo2 >> 32
            detail = f"{exc} (firmware error {fw_error:#x}, VMM error {vmm_error:#x})"
            if exc.errno in (errno.ENOTTY, errno.EACCES, errno.EPERM, errno.ENODEV):
                raise BackendUnavailable(f"{self.device} refused SNP_GET_REPORT: {detail}") from exc
            if fw_error:
                raise FirmwareError(f"SNP_GET_REPORT failed: {detail}") from exc
            raise DeviceError(f"SNP_GET_REPORT failed: {detail}") from exc
        finally:
            os.close(fd)
        return parse_report_response(bytes(resp.data))

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Evidence for ``report_data`` (≤ 64 bytes); ``host_data`` is checked against HOST_DATA.

        Raises what :meth:`request_report` raises, and :class:`HostDataMismatch`.
        """
        report = parse_snp_report(self.request_report(report_data))
        check_host_data(report.host_data, host_data, "HOST_DATA")
        product = f"AMD SEV-SNP {report.product}" if report.product else self._info.product
        evidence = SnpEvidence(report, None).to_bytes()
        return EvidenceResult(TeeType.SNP, "sev-guest", False, product, evidence, report.report_data)
