"""The Intel TDX DCAP quote layout (Intel TDX DCAP Quote Generation Library and Quote
Verification Library, "Quote Format" §A.3 v4 and §A.4 v5) as the verifier needs it.

Little-endian; header 48 bytes; TD report body 584 bytes (TDX 1.0) or 648 bytes (TDX 1.5);
then the signature data: ECDSA P-256 quote signature, attestation key, and certification data
type 6 (QE report, its PCK signature, QE auth data, and certification data type 5: the PEM
PCK chain).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stages.attest.errors import EvidenceMalformed, EvidenceUnsupported

HEADER_SIZE = 48
TD10_BODY = 584
TD15_BODY = 648
QE_REPORT_SIZE = 384
TEE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2


@dataclass(frozen=True)
class TdReport:
    """The TD report body (TDX module ABI "TDREPORT": TDINFO + TEE_TCB_INFO fields)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_servicetd: bytes | None


@dataclass(frozen=True)
class QeReport:
    """The SGX REPORT body of the quoting enclave (384 bytes)."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    """A parsed TDX quote v4/v5."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    body: TdReport
    signed_bytes: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceMalformed(f"TDX quote truncated in {what} (needs {n} bytes at offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def _td_report(b: bytes, tdx15: bool) -> TdReport:
    r = _Reader(b)
    return TdReport(
        tee_tcb_svn=r.take(16, "tee_tcb_svn"),
        mr_seam=r.take(48, "mr_seam"),
        mr_signer_seam=r.take(48, "mr_signer_seam"),
        seam_attributes=r.take(8, "seam_attributes"),
        td_attributes=r.take(8, "td_attributes"),
        xfam=r.take(8, "xfam"),
        mr_td=r.take(48, "mr_td"),
        mr_config_id=r.take(48, "mr_config_id"),
        mr_owner=r.take(48, "mr_owner"),
        mr_owner_config=r.take(48, "mr_owner_config"),
        rtmr=(r.take(48, "rtmr0"), r.take(48, "rtmr1"), r.take(48, "rtmr2"), r.take(48, "rtmr3")),
        report_data=r.take(64, "report_data"),
        tee_tcb_svn2=r.take(16, "tee_tcb_svn2") if tdx15 else None,
        mr_servicetd=r.take(48, "mr_servicetd") if tdx15 else None,
    )


def parse_qe_report(raw: bytes) -> QeReport:
    """Parse the 384-byte SGX report body of the QE."""
    if len(raw) != QE_REPORT_SIZE:
        raise EvidenceMalformed("QE report must be 384 bytes")
    return QeReport(
        raw=raw,
        cpu_svn=raw[0:16],
        misc_select=int.from_bytes(raw[16:20], "little"),
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        isv_prod_id=int.from_bytes(raw[256:258], "little"),
        isv_svn=int.from_bytes(raw[258:260], "little"),
        report_data=raw[320:384],
    )


def parse_tdx_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5; trailing bytes after the certification data are ignored.

    Raises :class:`EvidenceMalformed` on truncation or inconsistent sizes and
    :class:`EvidenceUnsupported` for other versions, TEE types (SGX) or key types.
    """
    r = _Reader(data)
    version = r.u16("header")
    att_key_type = r.u16("header")
    tee_type = r.u32("header")
    qe_svn = r.u16("header")
    pce_svn = r.u16("header")
    qe_vendor_id = r.take(16, "header")
    user_data = r.take(20, "header")
    if version not in (4, 5):
        kind = "SGX" if tee_type == 0 else "TDX"
        raise EvidenceUnsupported(f"expected a TDX quote (v4/v5), got {kind} quote v{version}")
    if tee_type != TEE_TDX:
        raise EvidenceUnsupported(f"expected a TDX quote (TEE type 0x81), got TEE type {tee_type:#x}")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise EvidenceUnsupported(f"attestation key type {att_key_type} is not ECDSA P-256")
    if version == 4:
        body_type, body_size = 2, TD10_BODY
    else:
        body_type, body_size = r.u16("body descriptor"), r.u32("body descriptor")
        if (body_type, body_size) not in ((2, TD10_BODY), (3, TD15_BODY)):
            raise EvidenceUnsupported(f"TDX quote v5 body type {body_type} of {body_size} bytes is not a TD report")
    body = _td_report(r.take(body_size, "TD report"), body_type == 3)
    signed = data[: r.pos]
    sig_len = r.u32("signature data length")
    sig = _Reader(r.take(sig_len, "signature data"))
    signature = sig.take(64, "quote signature")
    attestation_key = sig.take(64, "attestation key")
    if sig.u16("certification data type") != 6:
        raise EvidenceUnsupported("TDX quote certification data is not QE report certification data (type 6)")
    cert = _Reader(sig.take(sig.u32("certification data size"), "certification data"))
    qe_report = parse_qe_report(cert.take(QE_REPORT_SIZE, "QE report"))
    qe_sig = cert.take(64, "QE report signature")
    qe_auth = cert.take(cert.u16("QE auth data size"), "QE auth data")
    if cert.u16("PCK certification data type") != 5:
        raise EvidenceUnsupported("TDX quote does not carry a PCK certificate chain (certification data type 5)")
    pck_chain = cert.take(cert.u32("PCK chain size"), "PCK chain").rstrip(b"\0")
    return TdxQuote(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        body_type=body_type,
        body=body,
        signed_bytes=signed,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=qe_auth,
        pck_chain_pem=pck_chain,
    )
