"""The Intel DCAP quote layout (TDX quote v4/v5, SGX quote v3): parse, serialize, signed portion.

The one home of this layout in ccpipe (the emulated TDX backend writes it, the verifier
imports it). Pure: bytes in, dataclasses out; no crypto, no I/O. All integers little-endian.

Quote::

    0      48   header             HEADER_LAYOUT
    48     6    body descriptor    v5 only: body_type u16 (2 = TD 1.0, 3 = TD 1.5), body_size u32
    48|54  N    body               TD report body (584 bytes TD 1.0, 648 TD 1.5) or SGX report (384, v3)
    …      4    signature_data_len u32
    …           signature data

The quote signature (ECDSA P-256/SHA-256 by the attestation key) covers header ‖ [descriptor] ‖
body: :func:`signed_portion`. Signature data, v4/v5::

    0    64  signature           r ‖ s, big-endian
    64   64  attestation_key     P-256 point x ‖ y, big-endian
    128  2   certification type  6 = QE report certification data
    130  4   certification size
    134      QE report certification data:
               384 QE report (SGX report body, signed by the PCK key)
               64  QE report signature r ‖ s
               2+n QE authentication data (u16 size, bytes)
               2+4+m certification data: type u16 (5 = PEM PCK chain), size u32, bytes

SGX v3 quotes carry the QE fields directly after the attestation key (no type-6 wrapper).
The QE report's report_data binds the attestation key: SHA-256(attestation_key ‖ qe_auth_data)
followed by 32 zero bytes.

Bytes after the signature data (fixed-size buffers) are kept in ``trailing``; they are not
part of the quote and not signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ccpipe.evidence.errors import MalformedEvidence, UnsupportedEvidence
from ccpipe.schemas.json_input import load_json

HEADER_SIZE = 48
TD10_BODY_SIZE = 584
TD15_BODY_SIZE = 648
SGX_REPORT_SIZE = 384
TEE_TYPE_SGX = 0x00
TEE_TYPE_TDX = 0x81
ATT_KEY_TYPE_ECDSA_P256 = 2
BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

Kind = Literal["u16", "u32", "bytes"]


class Field(NamedTuple):
    """One fixed-size field: name, offset within its structure, size, decoding."""

    name: str
    offset: int
    size: int
    kind: Kind = "bytes"


HEADER_LAYOUT: tuple[Field, ...] = (
    Field("version", 0, 2, "u16"),
    Field("att_key_type", 2, 2, "u16"),
    Field("tee_type", 4, 4, "u32"),
    Field("qe_svn", 8, 2, "u16"),  # SGX v3; reserved (zero) in TDX quotes
    Field("pce_svn", 10, 2, "u16"),  # SGX v3; reserved (zero) in TDX quotes
    Field("qe_vendor_id", 12, 16),
    Field("user_data", 28, 20),
)
"""The 48-byte quote header."""

TD_BODY_LAYOUT: tuple[Field, ...] = (
    Field("tee_tcb_svn", 0, 16),
    Field("mr_seam", 16, 48),
    Field("mr_signer_seam", 64, 48),
    Field("seam_attributes", 112, 8),
    Field("td_attributes", 120, 8),
    Field("xfam", 128, 8),
    Field("mr_td", 136, 48),
    Field("mr_config_id", 184, 48),
    Field("mr_owner", 232, 48),
    Field("mr_owner_config", 280, 48),
    Field("rtmr0", 328, 48),
    Field("rtmr1", 376, 48),
    Field("rtmr2", 424, 48),
    Field("rtmr3", 472, 48),
    Field("report_data", 520, 64),
    Field("tee_tcb_svn2", 584, 16),  # TD 1.5 only
    Field("mr_servicetd", 600, 48),  # TD 1.5 only
)
"""The TD report body; offsets are relative to the body (48 in v4 quotes, 54 in v5)."""

SGX_REPORT_LAYOUT: tuple[Field, ...] = (
    Field("cpu_svn", 0, 16),
    Field("misc_select", 16, 4, "u32"),
    Field("reserved1", 20, 12),
    Field("isv_ext_prod_id", 32, 16),
    Field("attributes", 48, 16),
    Field("mr_enclave", 64, 32),
    Field("reserved2", 96, 32),
    Field("mr_signer", 128, 32),
    Field("reserved3", 160, 32),
    Field("config_id", 192, 64),
    Field("isv_prod_id", 256, 2, "u16"),
    Field("isv_svn", 258, 2, "u16"),
    Field("config_svn", 260, 2, "u16"),
    Field("reserved4", 262, 42),
    Field("isv_family_id", 304, 16),
    Field("report_data", 320, 64),
)
"""The 384-byte SGX report body (the QE report; the body of SGX v3 quotes)."""


def _decode(layout: tuple[Field, ...], buf: bytes, base: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in layout:
        chunk = buf[base + f.offset : base + f.offset + f.size]
        out[f.name] = bytes(chunk) if f.kind == "bytes" else int.from_bytes(chunk, "little")
    return out


def _encode(layout: tuple[Field, ...], obj: object, size: int) -> bytes:
    out = bytearray(size)
    for f in layout:
        value = getattr(obj, f.name)
        if value is None:
            continue
        out[f.offset : f.offset + f.size] = value if f.kind == "bytes" else value.to_bytes(f.size, "little")
    return bytes(out)


def _check(layout: tuple[Field, ...], obj: object, what: str, optional: tuple[str, ...] = ()) -> None:
    for f in layout:
        value = getattr(obj, f.name)
        if value is None and f.name in optional:
            continue
        if f.kind == "bytes":
            ok = isinstance(value, bytes) and len(value) == f.size
        else:
            ok = isinstance(value, int) and 0 <= value < 1 << (8 * f.size)
        if not ok:
            raise MalformedEvidence(f"{what} field {f.name} must be {f.size} bytes wide")


@dataclass(frozen=True)
class QuoteHeader:
    """The quote header (:data:`HEADER_LAYOUT`)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        _check(HEADER_LAYOUT, self, "quote header")


@dataclass(frozen=True)
class TdQuoteBody:
    """A TD report body (:data:`TD_BODY_LAYOUT`); the TD 1.5 fields are None in TD 1.0 bodies."""

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
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_servicetd: bytes | None = None

    def __post_init__(self) -> None:
        _check(TD_BODY_LAYOUT, self, "TD report body", optional=("tee_tcb_svn2", "mr_servicetd"))
        if (self.tee_tcb_svn2 is None) != (self.mr_servicetd is None):
            raise MalformedEvidence("TD 1.5 bodies carry both tee_tcb_svn2 and mr_servicetd")

    @property
    def size(self) -> int:
        """Size in bytes: 584 (TD 1.0) or 648 (TD 1.5)."""
        return TD10_BODY_SIZE if self.tee_tcb_svn2 is None else TD15_BODY_SIZE

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3."""
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def debug(self) -> bool:
        """TD attribute bit 0 (DEBUG): the host can inspect the TD."""
        return bool(self.td_attributes[0] & 0x01)

    def serialize(self) -> bytes:
        """The body bytes."""
        return _encode(TD_BODY_LAYOUT, self, self.size)


@dataclass(frozen=True)
class SgxReportBody:
    """An SGX report body (:data:`SGX_REPORT_LAYOUT`), reserved bytes kept so it re-serializes exactly."""

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        _check(SGX_REPORT_LAYOUT, self, "SGX report body")

    def serialize(self) -> bytes:
        """The 384 bytes (what the QE report signature covers)."""
        return _encode(SGX_REPORT_LAYOUT, self, SGX_REPORT_SIZE)


def parse_sgx_report_body(raw: bytes) -> SgxReportBody:
    """Parse a 384-byte SGX report body; raises :class:`MalformedEvidence` for another size."""
    if len(raw) != SGX_REPORT_SIZE:
        raise MalformedEvidence(f"an SGX report body is {SGX_REPORT_SIZE} bytes, got {len(raw)}")
    return SgxReportBody(**_decode(SGX_REPORT_LAYOUT, raw))


@dataclass(frozen=True)
class TdxQuote:
    """A DCAP quote: header, body, and the signature data with the QE certification data."""

    header: QuoteHeader
    body_type: int
    body: TdQuoteBody | SgxReportBody
    signature: bytes
    attestation_key: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_cert_data_type: int
    pck_cert_data: bytes
    trailing: bytes = b""

    def __post_init__(self) -> None:
        for name, size in (("signature", 64), ("attestation_key", 64), ("qe_report_signature", 64)):
            if len(getattr(self, name)) != size:
                raise MalformedEvidence(f"quote {name} must be {size} bytes")
        if len(self.qe_auth_data) > 0xFFFF:
            raise MalformedEvidence("QE authentication data is longer than 65535 bytes")

    @property
    def version(self) -> int:
        """Quote version (3 SGX, 4 or 5 TDX)."""
        return self.header.version

    @property
    def td_body(self) -> TdQuoteBody:
        """The TD report body; raises :class:`UnsupportedEvidence` for an SGX quote."""
        if not isinstance(self.body, TdQuoteBody):
            raise UnsupportedEvidence("this is an SGX quote, not a TDX quote")
        return self.body

    @property
    def pck_chain_pem(self) -> bytes:
        """The PEM PCK chain (leaf, intermediate, root) without the NUL padding some quotes carry."""
        return self.pck_cert_data.rstrip(b"\0")

    @property
    def body_offset(self) -> int:
        """Offset of the body in the quote: 54 in v5 (after the descriptor), else 48."""
        return HEADER_SIZE + 6 if self.version == 5 else HEADER_SIZE

    def signed_portion(self) -> bytes:
        """Header ‖ [v5 body descriptor] ‖ body: what the attestation key signs."""
        out = _encode(HEADER_LAYOUT, self.header, HEADER_SIZE)
        body = self.body.serialize()
        if self.version == 5:
            out += struct.pack("<HI", self.body_type, len(body))
        return out + body

    def serialize(self) -> bytes:
        """The quote bytes, followed by ``trailing``."""
        qe = self.qe_report.serialize() + self.qe_report_signature
        qe += struct.pack("<H", len(self.qe_auth_data)) + self.qe_auth_data
        qe += struct.pack("<HI", self.pck_cert_data_type, len(self.pck_cert_data)) + self.pck_cert_data
        if self.version == 3:
            sig = self.signature + self.attestation_key + qe
        else:
            sig = self.signature + self.attestation_key + struct.pack("<HI", CERT_TYPE_QE_REPORT, len(qe)) + qe
        return self.signed_portion() + struct.pack("<I", len(sig)) + sig + self.trailing


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedEvidence(f"quote truncated in {what} (needs {n} bytes at offset {self.pos})")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


def parse_dcap_quote(data: bytes) -> TdxQuote:
    """Parse a DCAP quote of any supported version: SGX v3, TDX v4 and v5.

    Raises :class:`MalformedEvidence` on truncation or inconsistent sizes, and
    :class:`UnsupportedEvidence` for other versions, key types or certification data types.
    """
    data = bytes(data)
    r = _Reader(data)
    header = QuoteHeader(**_decode(HEADER_LAYOUT, r.take(HEADER_SIZE, "header")))
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise UnsupportedEvidence(f"quote attestation key type {header.att_key_type} is not ECDSA P-256 (2)")
    body: TdQuoteBody | SgxReportBody
    if header.version == 3:
        body_type = BODY_TYPE_SGX
        body = parse_sgx_report_body(r.take(SGX_REPORT_SIZE, "SGX report body"))
    elif header.version in (4, 5):
        if header.tee_type != TEE_TYPE_TDX:
            raise UnsupportedEvidence(f"quote v{header.version} with TEE type {header.tee_type:#x} is not a TDX quote")
        body_type, size = BODY_TYPE_TD10, TD10_BODY_SIZE
        if header.version == 5:
            body_type, size = r.u16("body type"), r.u32("body size")
            if (body_type, size) not in ((BODY_TYPE_TD10, TD10_BODY_SIZE), (BODY_TYPE_TD15, TD15_BODY_SIZE)):
                raise UnsupportedEvidence(f"quote v5 body type {body_type} ({size} bytes) is not a TD report")
        raw_body = r.take(size, "TD report body")
        fields = _decode(TD_BODY_LAYOUT if size == TD15_BODY_SIZE else TD_BODY_LAYOUT[:-2], raw_body)
        body = TdQuoteBody(**fields)
    else:
        raise UnsupportedEvidence(f"DCAP quote version {header.version} is not supported (3, 4 or 5)")
    sig_len = r.u32("signature data length")
    sig = _Reader(r.take(sig_len, "signature data"))
    signature = sig.take(64, "quote signature")
    attestation_key = sig.take(64, "attestation key")
    qe = sig
    if header.version != 3:
        cert_type, cert_size = sig.u16("certification data type"), sig.u32("certification data size")
        if cert_type != CERT_TYPE_QE_REPORT:
            raise UnsupportedEvidence(f"quote certification data type {cert_type} is not a QE report (6)")
        qe = _Reader(sig.take(cert_size, "QE report certification data"))
    qe_report = parse_sgx_report_body(qe.take(SGX_REPORT_SIZE, "QE report"))
    qe_sig = qe.take(64, "QE report signature")
    qe_auth = qe.take(qe.u16("QE authentication data size"), "QE authentication data")
    pck_type = qe.u16("PCK certification data type")
    pck_data = qe.take(qe.u32("PCK certification data size"), "PCK certification data")
    if qe.pos != len(qe.data) or sig.pos != len(sig.data):
        raise MalformedEvidence("quote signature data sizes are inconsistent (bytes left over inside)")
    return TdxQuote(
        header=header,
        body_type=body_type,
        body=body,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=qe_auth,
        pck_cert_data_type=pck_type,
        pck_cert_data=pck_data,
        trailing=data[r.pos :],
    )


def parse_tdx_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote (v4 or v5); an SGX v3 quote is refused with :class:`UnsupportedEvidence`.

    Raises :class:`MalformedEvidence` for truncated or inconsistent bytes.
    """
    quote = parse_dcap_quote(data)
    if quote.version == 3:
        raise UnsupportedEvidence("expected a TDX quote (v4/v5), got an SGX quote (v3)")
    return quote


def serialize_tdx_quote(quote: TdxQuote) -> bytes:
    """The quote's bytes (and its trailing bytes): the inverse of :func:`parse_dcap_quote`."""
    return quote.serialize()


def signed_portion(quote: bytes | TdxQuote) -> bytes:
    """What the attestation key signs. For raw bytes, the prefix of the bytes you received.

    Raises :class:`MalformedEvidence`/:class:`UnsupportedEvidence` if the bytes do not parse.
    """
    if isinstance(quote, TdxQuote):
        return quote.signed_portion()
    parsed = parse_dcap_quote(quote)
    return bytes(quote[: parsed.body_offset + len(parsed.body.serialize())])


@dataclass(frozen=True)
class TdxEvidence:
    """Trustee's TDX evidence: ``{"cc_eventlog": <base64 CCEL> | null, "quote": <base64 quote>}``."""

    quote: bytes
    cc_eventlog: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The evidence JSON object (standard base64, padded)."""
        log = None if self.cc_eventlog is None else base64.b64encode(self.cc_eventlog).decode()
        return {"cc_eventlog": log, "quote": base64.b64encode(self.quote).decode()}

    def to_bytes(self) -> bytes:
        """The evidence JSON as compact UTF-8 bytes."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def parse_tdx_evidence(data: bytes | str | dict[str, Any]) -> TdxEvidence:
    """Parse Trustee's TDX evidence JSON; the quote stays raw bytes (parse it with :func:`parse_tdx_quote`).

    Raises :class:`MalformedEvidence` if it is not that JSON shape or not base64.
    """
    try:
        obj = load_json(data) if isinstance(data, bytes | str) else data
        if not isinstance(obj, dict) or not isinstance(obj.get("quote"), str):
            raise ValueError('TDX evidence must be an object with a "quote" string')
        log = obj.get("cc_eventlog")
        if log is not None and not isinstance(log, str):
            raise ValueError("cc_eventlog must be a base64 string or null")
        quote = base64.b64decode(obj["quote"], validate=True)
        cc_eventlog = base64.b64decode(log, validate=True) if log else None
    except (ValueError, binascii.Error) as exc:
        raise MalformedEvidence(f"not TDX evidence JSON: {exc}") from exc
    return TdxEvidence(quote, cc_eventlog)
