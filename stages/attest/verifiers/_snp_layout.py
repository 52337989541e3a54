"""The SEV-SNP ATTESTATION_REPORT layout (AMD SEV-SNP ABI spec 1.57, Table 22 / §7.3) as
the verifier needs it, and the rebuild of the raw report from Trustee's evidence JSON.

Fields at fixed offsets, little-endian; 1184 bytes; the signature covers bytes 0x000–0x29F.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from stages.attest.errors import EvidenceMalformed

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0


@dataclass(frozen=True)
class SnpReport:
    """A parsed SEV-SNP attestation report (fields named as in the ABI spec)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the ECDSA P-384 signature covers."""
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> int:
        """Which key signed the report: 0 VCEK, 1 VLEK, 7 none (KEY_INFO bits 2–4)."""
        return (self.key_info >> 2) & 0x7


def parse_snp_report(raw: bytes) -> SnpReport:
    """Parse a raw 1184-byte report; raises :class:`EvidenceMalformed` for any other size."""
    if len(raw) != REPORT_SIZE:
        raise EvidenceMalformed(f"an SEV-SNP report is {REPORT_SIZE} bytes, got {len(raw)}")

    def u32(off: int) -> int:
        return int(struct.unpack_from("<I", raw, off)[0])

    def u64(off: int) -> int:
        return int(struct.unpack_from("<Q", raw, off)[0])

    return SnpReport(
        raw=bytes(raw),
        version=u32(0x00),
        guest_svn=u32(0x04),
        policy=u64(0x08),
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=u32(0x30),
        signature_algo=u32(0x34),
        current_tcb=u64(0x38),
        platform_info=u64(0x40),
        key_info=u32(0x48),
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=u64(0x180),
        cpuid_fam_id=raw[0x188],
        cpuid_mod_id=raw[0x189],
        cpuid_step=raw[0x18A],
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=u64(0x1E0),
        current_build=raw[0x1E8],
        current_minor=raw[0x1E9],
        current_major=raw[0x1EA],
        committed_build=raw[0x1EC],
        committed_minor=raw[0x1ED],
        committed_major=raw[0x1EE],
        launch_tcb=u64(0x1F0),
        launch_mit_vector=u64(0x1F8),
        current_mit_vector=u64(0x200),
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
    )


def _tcb_u64(tcb: dict[str, Any]) -> int:
    """Encode a sev-crate TcbVersion dict: Turin layout when ``fmc`` is set, else Milan/Genoa."""
    if tcb.get("fmc") is not None:
        b = [tcb["fmc"], tcb["bootloader"], tcb["tee"], tcb["snp"], 0, 0, 0, tcb["microcode"]]
    else:
        b = [tcb["bootloader"], tcb["tee"], 0, 0, 0, 0, tcb["snp"], tcb["microcode"]]
    return int.from_bytes(bytes(b), "little")


def _bytes(obj: dict[str, Any], key: str, size: int) -> bytes:
    value = obj[key]
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"{key} must be a list of {size} bytes")
    return bytes(value)


def report_from_trustee_json(obj: dict[str, Any]) -> bytes:
    """Rebuild the raw report from Trustee's ``attestation_report`` JSON (sev crate serde form).

    Reserved bytes are zero, as in every report the firmware signs; the rebuilt bytes verify
    with the original signature. Raises :class:`EvidenceMalformed` on a missing or mistyped field.
    """
    try:
        raw = bytearray(REPORT_SIZE)
        struct.pack_into("<IIQ", raw, 0x00, obj["version"], obj["guest_svn"], obj["policy"])
        raw[0x10:0x20] = _bytes(obj, "family_id", 16)
        raw[0x20:0x30] = _bytes(obj, "image_id", 16)
        struct.pack_into("<II", raw, 0x30, obj["vmpl"], obj["sig_algo"])
        struct.pack_into("<QQI", raw, 0x38, _tcb_u64(obj["current_tcb"]), obj["plat_info"], obj["key_info"])
        raw[0x50:0x90] = _bytes(obj, "report_data", 64)
        raw[0x90:0xC0] = _bytes(obj, "measurement", 48)
        raw[0xC0:0xE0] = _bytes(obj, "host_data", 32)
        raw[0xE0:0x110] = _bytes(obj, "id_key_digest", 48)
        raw[0x110:0x140] = _bytes(obj, "author_key_digest", 48)
        raw[0x140:0x160] = _bytes(obj, "report_id", 32)
        raw[0x160:0x180] = _bytes(obj, "report_id_ma", 32)
        struct.pack_into("<Q", raw, 0x180, _tcb_u64(obj["reported_tcb"]))
        for off, key in ((0x188, "cpuid_fam_id"), (0x189, "cpuid_mod_id"), (0x18A, "cpuid_step")):
            raw[off] = obj.get(key) or 0
        raw[0x1A0:0x1E0] = _bytes(obj, "chip_id", 64)
        struct.pack_into("<Q", raw, 0x1E0, _tcb_u64(obj["committed_tcb"]))
        for off, key in ((0x1E8, "current"), (0x1EC, "committed")):
            v = obj[key]
            raw[off : off + 3] = bytes([v["build"], v["minor"], v["major"]])
        struct.pack_into("<Q", raw, 0x1F0, _tcb_u64(obj["launch_tcb"]))
        struct.pack_into("<QQ", raw, 0x1F8, obj.get("launch_mit_vector") or 0, obj.get("current_mit_vector") or 0)
        sig = obj["signature"]
        raw[0x2A0:0x2E8] = _bytes(sig, "r", 72)
        raw[0x2E8:0x330] = _bytes(sig, "s", 72)
    except (KeyError, TypeError, ValueError, struct.error, OverflowError) as exc:
        raise EvidenceMalformed(f"SEV-SNP evidence JSON: bad attestation_report ({exc})") from exc
    return bytes(raw)


def _tcb_dict(value: int, turin: bool) -> dict[str, Any]:
    b = value.to_bytes(8, "little")
    if turin:
        return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
    return {"fmc": None, "bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}


def report_to_trustee_json(report: SnpReport, *, turin: bool = False) -> dict[str, Any]:
    """The inverse of :func:`report_from_trustee_json`: the sev crate serde form of a report."""
    return {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "family_id": list(report.family_id),
        "image_id": list(report.image_id),
        "vmpl": report.vmpl,
        "sig_algo": report.signature_algo,
        "current_tcb": _tcb_dict(report.current_tcb, turin),
        "plat_info": report.platform_info,
        "key_info": report.key_info,
        "report_data": list(report.report_data),
        "measurement": list(report.measurement),
        "host_data": list(report.host_data),
        "id_key_digest": list(report.id_key_digest),
        "author_key_digest": list(report.author_key_digest),
        "report_id": list(report.report_id),
        "report_id_ma": list(report.report_id_ma),
        "reported_tcb": _tcb_dict(report.reported_tcb, turin),
        "cpuid_fam_id": report.cpuid_fam_id,
        "cpuid_mod_id": report.cpuid_mod_id,
        "cpuid_step": report.cpuid_step,
        "chip_id": list(report.chip_id),
        "committed_tcb": _tcb_dict(report.committed_tcb, turin),
        "current": {
            "major": report.current_major,
            "minor": report.current_minor,
            "build": report.current_build,
        },
        "committed": {
            "major": report.committed_major,
            "minor": report.committed_minor,
            "build": report.committed_build,
        },
        "launch_tcb": _tcb_dict(report.launch_tcb, turin),
        "launch_mit_vector": report.launch_mit_vector,
        "current_mit_vector": report.current_mit_vector,
        "signature": {"r": list(report.signature_r), "s": list(report.signature_s)},
    }


def tcb_fields(value: int, product: str) -> dict[str, int]:
    """Decode a TCB_VERSION (ABI spec 1.57 §2.2): Turin puts FMC first, the others have no FMC."""
    d = _tcb_dict(value, product == "Turin")
    return {k: v for k, v in d.items() if v is not None}
