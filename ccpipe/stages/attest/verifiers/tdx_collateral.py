"""Intel DCAP collateral for TDX, supplied offline: TCB info, QE identity, their signing chain
and the CRLs; verifying it and evaluating a platform's TCB status against it.

References: Intel "SGX and TDX DCAP: PCS API v4" (TCB Info v3 and Enclave Identity v2 JSON,
signatures over the exact bytes of the ``tcbInfo`` / ``enclaveIdentity`` value), Intel "SGX PCK
Certificate and CRL Profile" §3.5 (SGX extensions, OID 1.2.840.113741.1.13.1), and the
TDX TCB-status algorithm of the Intel QVL (documented in PCS API v4 "TDX TCB status").
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccpipe.evidence.cert_extensions import pck_extensions
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.stages.attest.errors import (
    CollateralExpired,
    CollateralInvalid,
    EvidenceMalformed,
    QeIdentityMismatch,
    TcbLevelNotSupported,
)

SGX_EXTENSIONS = "1.2.840.113741.1.13.1"
STATUS_ORDER = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


@dataclass(frozen=True)
class PckInfo:
    """The SGX extensions of a PCK certificate."""

    fmspc: str
    pce_id: str
    sgx_tcb: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes


def pck_info(cert: x509.Certificate) -> PckInfo:
    """Read FMSPC, PCE-ID and the TCB from a PCK certificate; raises :class:`EvidenceMalformed`."""
    try:
        ext = pck_extensions(cert)  # the one reader of the SGX extension (ccpipe.evidence)
    except MalformedEvidence as exc:
        raise EvidenceMalformed(f"unreadable SGX extensions in the PCK certificate ({exc.message})") from exc
    return PckInfo(fmspc=ext.fmspc.hex(), pce_id=ext.pce_id.hex(), sgx_tcb=ext.sgx_tcb_components,
                   pce_svn=ext.pce_svn, cpu_svn=ext.cpu_svn)


def _top_level_members(text: str) -> dict[str, tuple[int, int]]:
    """Spans of each top-level member's value in a JSON object text (to verify exact bytes)."""
    dec = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = len(text) - len(text.lstrip())
    if text[i : i + 1] != "{":
        raise ValueError("not a JSON object")
    i += 1

    def ws(j: int) -> int:
        while j < len(text) and text[j] in " \t\r\n":
            j += 1
        return j

    while True:
        i = ws(i)
        if text[i : i + 1] == "}":
            return spans
        key, i = dec.raw_decode(text, i)
        i = ws(i)
        if text[i : i + 1] != ":":
            raise ValueError("expected ':'")
        start = ws(i + 1)
        _, end = dec.raw_decode(text, start)
        spans[str(key)] = (start, end)
        i = ws(end)
        if text[i : i + 1] == ",":
            i += 1


def verify_signed_json(body: bytes, member: str, signer: x509.Certificate, what: str) -> dict[str, Any]:
    """Check the ECDSA P-256 signature over the exact bytes of ``member``; return its parsed value.

    Raises :class:`CollateralInvalid`.
    """
    try:
        text = body.decode("utf-8")
        spans = _top_level_members(text)
        start, end = spans[member]
        signed = text[start:end].encode("utf-8")
        sig = bytes.fromhex(json.loads(text[slice(*spans["signature"])]))
        value = json.loads(signed)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CollateralInvalid(f"{what} is not a signed PCS document ({exc})") from exc
    key = signer.public_key()
    if len(sig) != 64 or not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollateralInvalid(f"{what}: signature is not a 64-byte ECDSA P-256 signature")
    try:
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise CollateralInvalid(f"{what}: signature does not verify with the TCB Signing key") from exc
    if not isinstance(value, dict):
        raise CollateralInvalid(f"{what}: {member} is not an object")
    return value


def _when(value: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as exc:
        raise CollateralInvalid(f"{what}: bad date {value!r}") from exc


def check_fresh(doc: dict[str, Any], at: datetime, what: str, reject: bool) -> bool:
    """True if ``doc`` (TCB info / QE identity) is past ``nextUpdate`` at ``at``; raises
    :class:`CollateralExpired` instead when ``reject``."""
    expired = at > _when(doc.get("nextUpdate", ""), what)
    if expired and reject:
        raise CollateralExpired(f"{what} expired on {doc.get('nextUpdate')}")
    return expired


def worst(*statuses: str) -> str:
    """The least favourable of TCB statuses (unknown statuses count as Revoked)."""
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    return max(statuses, key=lambda s: rank.get(s, len(STATUS_ORDER)))


@dataclass(frozen=True)
class TcbVerdict:
    """Result of the TCB evaluation."""

    status: str
    tcb_date: str
    advisory_ids: list[str] = field(default_factory=list)
    qe_status: str = "UpToDate"
    module_status: str | None = None


def _svns(comps: list[dict[str, Any]]) -> list[int]:
    return [int(c["svn"]) for c in comps]


def evaluate_tcb(
    tcb_info: dict[str, Any], pck: PckInfo, tee_tcb_svn: bytes, mr_signer_seam: bytes, seam_attributes: bytes
) -> tuple[str, str, list[str], str | None]:
    """Platform TCB status (PCS API v4 "TDX TCB status"); returns (status, date, advisories, module status).

    (a) TCB info must be TDX v3 for the PCK's FMSPC and PCE-ID. (b) The first level whose SGX
    components and PCESVN are ≤ the PCK's and whose TDX components are ≤ TEE_TCB_SVN (from index
    2 when TEE_TCB_SVN[1], the module major version, is non-zero) gives the status. (c) The TDX
    module identity (``TDX_<major>``) must match MRSIGNERSEAM and SEAMATTRIBUTES; its level with
    ISVSVN ≤ TEE_TCB_SVN[0] gives the module status. Raises :class:`CollateralInvalid` or
    :class:`TcbLevelNotSupported`.
    """
    try:
        if tcb_info.get("id") != "TDX" or int(tcb_info.get("version", 0)) < 3:
            raise CollateralInvalid("TCB info is not TDX TCB info v3")
        if str(tcb_info["fmspc"]).lower() != pck.fmspc.lower():
            raise CollateralInvalid(f"TCB info is for FMSPC {tcb_info['fmspc']}, the PCK is {pck.fmspc}")
        if str(tcb_info["pceId"]).lower() != pck.pce_id.lower():
            raise CollateralInvalid(f"TCB info is for PCE {tcb_info['pceId']}, the PCK is {pck.pce_id}")
        major = tee_tcb_svn[1]
        first = 2 if major > 0 else 0
        status = None
        for level in tcb_info["tcbLevels"]:
            tcb = level["tcb"]
            if any(p < s for p, s in zip(pck.sgx_tcb, _svns(tcb["sgxtcbcomponents"]), strict=True)):
                continue
            if pck.pce_svn < int(tcb["pcesvn"]):
                continue
            tdx = _svns(tcb["tdxtcbcomponents"])
            if any(tee_tcb_svn[i] < tdx[i] for i in range(first, 16)):
                continue
            status = (str(level["tcbStatus"]), str(level["tcbDate"]), list(level.get("advisoryIDs", [])))
            break
        if status is None:
            raise TcbLevelNotSupported("no TCB level of the TCB info applies to this platform (TCB not supported)")
        module_status = None
        identities = tcb_info.get("tdxModuleIdentities")
        if major > 0 and identities is not None:
            ident = next((m for m in identities if m.get("id") == f"TDX_{major:02X}"), None)
            if ident is None:
                raise TcbLevelNotSupported(f"TCB info has no identity for TDX module major version {major}")
            module = ident
        else:
            module = tcb_info["tdxModule"]
        if not hmac.compare_digest(bytes.fromhex(module["mrsigner"]), mr_signer_seam):
            raise TcbLevelNotSupported("MRSIGNERSEAM is not the TDX module signer in the TCB info")
        mask = bytes.fromhex(module["attributesMask"])
        masked = bytes(a & m for a, m in zip(seam_attributes, mask, strict=True))
        if masked != bytes.fromhex(module["attributes"]):
            raise TcbLevelNotSupported("SEAMATTRIBUTES do not match the TDX module identity")
        if major > 0 and identities is not None:
            level = next((lv for lv in module["tcbLevels"] if int(lv["tcb"]["isvsvn"]) <= tee_tcb_svn[0]), None)
            if level is None:
                raise TcbLevelNotSupported("the TDX module's SVN is below every level of its identity")
            module_status = str(level["tcbStatus"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CollateralInvalid(f"TCB info is malformed ({exc})") from exc
    return status[0], status[1], status[2], module_status


def evaluate_qe_identity(
    identity: dict[str, Any],
    qe_mr_signer: bytes,
    qe_prod_id: int,
    qe_misc: int,
    qe_attributes: bytes,
    qe_svn: int,
) -> str:
    """QE identity check (PCS API v4 Enclave Identity v2): MRSIGNER, ISVPRODID, masked
    MISCSELECT/ATTRIBUTES, then the first level with ISVSVN ≤ the QE's. Raises
    :class:`QeIdentityMismatch` or :class:`CollateralInvalid`."""
    try:
        if identity.get("id") != "TD_QE":
            raise CollateralInvalid(f"QE identity is for {identity.get('id')!r}, not TD_QE")
        if not hmac.compare_digest(bytes.fromhex(identity["mrsigner"]), qe_mr_signer):
            raise QeIdentityMismatch("the QE's MRSIGNER is not Intel's TD QE signer")
        if int(identity["isvprodid"]) != qe_prod_id:
            raise QeIdentityMismatch(f"the QE's ISVPRODID {qe_prod_id} is not {identity['isvprodid']}")
        misc_mask = int(identity["miscselectMask"], 16)
        if qe_misc & misc_mask != int(identity["miscselect"], 16) & misc_mask:
            raise QeIdentityMismatch("the QE's MISCSELECT does not match its identity")
        mask = bytes.fromhex(identity["attributesMask"])
        want = bytes.fromhex(identity["attributes"])
        if bytes(a & m for a, m in zip(qe_attributes, mask, strict=True)) != bytes(
            a & m for a, m in zip(want, mask, strict=True)
        ):
            raise QeIdentityMismatch("the QE's ATTRIBUTES do not match its identity")
        for level in identity["tcbLevels"]:
            if int(level["tcb"]["isvsvn"]) <= qe_svn:
                return str(level["tcbStatus"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CollateralInvalid(f"QE identity is malformed ({exc})") from exc
    raise TcbLevelNotSupported(f"the QE's ISVSVN {qe_svn} is below every level of its identity")
