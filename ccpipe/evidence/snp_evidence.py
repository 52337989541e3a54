"""Trustee's SEV-SNP evidence JSON and the kernel's certificate table.

Evidence (what Trustee's ``snp`` verifier deserializes, guest-components' attester emits)::

    {"attestation_report": {<sev crate serde form of the report>},
     "cert_chain": [{"cert_type": "VCEK", "data": [<DER bytes as numbers>]}, …] | null}

The serde form names the fields as the ``sev`` crate does (``sig_algo``, ``plat_info``,
``current``/``committed`` versions as ``{"major","minor","build"}``, TCB versions as
``{"fmc","bootloader","tee","snp","microcode"}``, ``signature`` as ``{"r":[72],"s":[72]}``),
byte arrays as lists of numbers; ``cpuid_*`` are null before v3 and the mitigation vectors are
present from v5. Rebuilding the raw report from it is exact (reserved bytes are zero).

Certificate table (configfs-tsm ``auxblob``, SNP extended report): entries of 24 bytes
``GUID(16, RFC 4122 byte order) ‖ offset(u32) ‖ length(u32)``, ended by an all-zero entry;
offsets count from the start of the table.

Pure; raises :class:`MalformedEvidence` on anything malformed.
"""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.snp_report import LAYOUT, SnpReport, TcbVersion
from ccpipe.schemas.json_input import load_json

CERT_GUIDS: dict[str, uuid.UUID] = {
    "ARK": uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"),
    "ASK": uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    "VCEK": uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"),
    "VLEK": uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
    "CRL": uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"),
}
_NAMES_BY_GUID = {v: k for k, v in CERT_GUIDS.items()}
_ENTRY = struct.Struct("<16sII")


@dataclass(frozen=True)
class CertTableEntry:
    """One certificate: its type (ARK, ASK, VCEK, VLEK, CRL, or a GUID string) and DER bytes."""

    cert_type: str
    data: bytes

    @property
    def guid(self) -> uuid.UUID:
        """The GUID of the entry in the kernel table."""
        return CERT_GUIDS.get(self.cert_type) or uuid.UUID(self.cert_type)


@dataclass(frozen=True)
class SnpEvidence:
    """An SEV-SNP report and the certificates that came with it (None: verifier fetches the VCEK)."""

    report: SnpReport
    cert_chain: tuple[CertTableEntry, ...] | None

    def to_json(self) -> dict[str, Any]:
        """Trustee's evidence JSON object."""
        chain = None
        if self.cert_chain is not None:
            chain = [_entry_to_json(e) for e in self.cert_chain]
        return {"attestation_report": snp_report_to_json(self.report), "cert_chain": chain}

    def to_bytes(self) -> bytes:
        """The evidence JSON as compact UTF-8 bytes (the same document as :meth:`to_json`)."""
        report = orjson.dumps(snp_report_to_json(self.report))  # compact, like json.dumps with separators
        chain = b"null" if self.cert_chain is None else _chain_json(self.cert_chain)
        return b'{"attestation_report":' + report + b',"cert_chain":' + chain + b"}"

    def certificate(self, cert_type: str) -> bytes | None:
        """DER of the first certificate of ``cert_type`` in the chain, if any."""
        for entry in self.cert_chain or ():
            if entry.cert_type == cert_type:
                return entry.data
        return None


def _tcb_to_json(tcb: TcbVersion) -> dict[str, Any]:
    return {"fmc": tcb.fmc, "bootloader": tcb.bootloader, "tee": tcb.tee, "snp": tcb.snp, "microcode": tcb.microcode}


def snp_report_to_json(report: SnpReport) -> dict[str, Any]:
    """The sev crate serde form of ``report`` (the value of ``attestation_report``)."""
    r = report
    out: dict[str, Any] = {
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": r.policy,
        "family_id": list(r.family_id),
        "image_id": list(r.image_id),
        "vmpl": r.vmpl,
        "sig_algo": r.signature_algo,
        "current_tcb": _tcb_to_json(r.current_tcb),
        "plat_info": r.platform_info,
        "key_info": r.key_info,
        "report_data": list(r.report_data),
        "measurement": list(r.measurement),
        "host_data": list(r.host_data),
        "id_key_digest": list(r.id_key_digest),
        "author_key_digest": list(r.author_key_digest),
        "report_id": list(r.report_id),
        "report_id_ma": list(r.report_id_ma),
        "reported_tcb": _tcb_to_json(r.reported_tcb),
        "cpuid_fam_id": r.cpuid_fam_id,
        "cpuid_mod_id": r.cpuid_mod_id,
        "cpuid_step": r.cpuid_step,
        "chip_id": list(r.chip_id),
        "committed_tcb": _tcb_to_json(r.committed_tcb),
        "current": {"major": r.current_major, "minor": r.current_minor, "build": r.current_build},
        "committed": {"major": r.committed_major, "minor": r.committed_minor, "build": r.committed_build},
        "launch_tcb": _tcb_to_json(r.launch_tcb),
    }
    if r.launch_mit_vector is not None:  # the sev crate omits the v5 vectors of older reports
        out["launch_mit_vector"] = r.launch_mit_vector
        out["current_mit_vector"] = r.current_mit_vector
    out["signature"] = {"r": list(r.signature_r), "s": list(r.signature_s)}
    return out


_JSON_NAMES = {"signature_algo": "sig_algo", "platform_info": "plat_info"}


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be an integer")
    return value


def _byte_list(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"{what} must be a list of {size} numbers")
    try:
        return bytes(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold numbers 0-255") from exc


def _tcb_from_json(value: Any, what: str) -> TcbVersion:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    fmc = value.get("fmc")
    return TcbVersion.from_parts(
        bootloader=_int(value, "bootloader"),
        tee=_int(value, "tee"),
        snp=_int(value, "snp"),
        microcode=_int(value, "microcode"),
        fmc=None if fmc is None else int(fmc),
    )


_VERSION_PART, _SIGNATURE, _OPTIONAL, _BYTES, _TCB, _INT = range(6)


def _json_plan() -> tuple[tuple[str, int, str, str, int], ...]:
    """How each LAYOUT field is read from the serde form: (field, how, JSON name, part, size).

    Worked out once: the per-field name mapping and tests cost more than reading the values.
    """
    plan = []
    for f in LAYOUT:
        name = _JSON_NAMES.get(f.name, f.name)
        if f.name.startswith(("current_", "committed_")) and f.kind == "u8":
            group, part = f.name.split("_")
            plan.append((f.name, _VERSION_PART, group, part, f.size))
        elif f.name in ("signature_r", "signature_s"):
            plan.append((f.name, _SIGNATURE, "signature", f.name[-1], f.size))
        elif f.since:
            plan.append((f.name, _OPTIONAL, name, "", f.size))
        elif f.kind == "bytes":
            plan.append((f.name, _BYTES, name, "", f.size))
        elif f.kind == "tcb":
            plan.append((f.name, _TCB, name, "", f.size))
        else:
            plan.append((f.name, _INT, name, "", f.size))
    return tuple(plan)


_PLAN = _json_plan()


def snp_report_from_json(obj: Any) -> SnpReport:
    """Parse the sev crate serde form back into a report.

    Raises :class:`MalformedEvidence` naming the first missing or mistyped field.
    """
    try:
        if not isinstance(obj, dict):
            raise ValueError("attestation_report must be an object")
        values: dict[str, Any] = {}
        for field, how, name, part, size in _PLAN:
            if how == _BYTES:
                values[field] = _byte_list(obj[name], size, name)
            elif how == _INT:
                values[field] = _int(obj, name)
            elif how == _VERSION_PART:
                values[field] = _int(obj[name], part)
            elif how == _TCB:
                values[field] = _tcb_from_json(obj[name], name)
            elif how == _SIGNATURE:
                values[field] = _byte_list(obj[name][part], size, f"signature.{part}")
            else:
                values[field] = None if obj.get(name) is None else _int(obj, name)
        return SnpReport(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvidence(f"SEV-SNP evidence JSON: bad attestation_report ({exc})") from exc


@functools.lru_cache(maxsize=16)
def _chain_json(chain: tuple[CertTableEntry, ...]) -> bytes:
    """The compact JSON of a certificate chain. Cached: a backend sends the same chain with every
    report, and encoding its DER as number lists costs more than signing the report."""
    return orjson.dumps([_entry_to_json(e) for e in chain])


def _entry_to_json(entry: CertTableEntry) -> dict[str, Any]:
    cert_type: Any = entry.cert_type if entry.cert_type in CERT_GUIDS else {"OTHER": entry.cert_type}
    return {"cert_type": cert_type, "data": list(entry.data)}


def _entry_from_json(value: Any) -> CertTableEntry:
    if not isinstance(value, dict):
        raise ValueError("cert_chain entries must be objects")
    cert_type = value["cert_type"]
    if isinstance(cert_type, dict) and isinstance(cert_type.get("OTHER"), str):
        cert_type = str(uuid.UUID(cert_type["OTHER"]))
    if not isinstance(cert_type, str):
        raise ValueError("cert_type must be a string")
    data = value["data"]
    if not isinstance(data, list):
        raise ValueError("cert_chain data must be a list of numbers")
    return CertTableEntry(cert_type, bytes(data))


def parse_snp_evidence(data: bytes | str | dict[str, Any]) -> SnpEvidence:
    """Parse Trustee's SEV-SNP evidence JSON (bytes, text or an already-decoded object).

    Raises :class:`MalformedEvidence` if it is not JSON of that shape.
    """
    try:
        obj = load_json(data) if isinstance(data, bytes | str) else data
        if not isinstance(obj, dict):
            raise ValueError("SEV-SNP evidence must be a JSON object")
        report = snp_report_from_json(obj["attestation_report"])
        raw_chain = obj.get("cert_chain")
        chain = None if raw_chain is None else tuple(_entry_from_json(e) for e in raw_chain)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvidence(f"not SEV-SNP evidence JSON: {exc}") from exc
    return SnpEvidence(report, chain)


def parse_cert_table(table: bytes) -> tuple[CertTableEntry, ...]:
    """Parse a kernel certificate table (GUID entries, offsets, lengths, zero terminator).

    Raises :class:`MalformedEvidence` if an entry points outside the table or the terminator
    is missing.
    """
    entries: list[CertTableEntry] = []
    pos = 0
    while True:
        if pos + _ENTRY.size > len(table):
            raise MalformedEvidence("SEV-SNP certificate table has no terminating entry")
        guid_bytes, offset, length = _ENTRY.unpack_from(table, pos)
        pos += _ENTRY.size
        guid = uuid.UUID(bytes=guid_bytes)
        if guid.int == 0 and offset == 0 and length == 0:
            return tuple(entries)
        if offset < pos or offset + length > len(table):
            raise MalformedEvidence(f"SEV-SNP certificate table entry {guid} points outside the table")
        name = _NAMES_BY_GUID.get(guid, str(guid))
        entries.append(CertTableEntry(name, bytes(table[offset : offset + length])))


def serialize_cert_table(entries: tuple[CertTableEntry, ...] | list[CertTableEntry]) -> bytes:
    """Build a kernel certificate table holding ``entries`` in order."""
    header_size = _ENTRY.size * (len(entries) + 1)
    header = bytearray()
    body = bytearray()
    for entry in entries:
        header += _ENTRY.pack(entry.guid.bytes, header_size + len(body), len(entry.data))
        body += entry.data
    header += bytes(_ENTRY.size)
    return bytes(header + body)
