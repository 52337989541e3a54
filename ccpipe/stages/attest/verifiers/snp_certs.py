"""AMD endorsement keys for SEV-SNP: the shipped product roots, the VCEK/VLEK extensions, the
ARK → ASK/ASVK → VCEK/VLEK chain and the offline VCEK store.

AMD references: SEV-SNP ABI spec 1.57 §3 (keys), "Versioned Chip Endorsement Key (VCEK)
Certificate and KDS Interface Specification" rev 1.00 §3 (certificate extensions).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from cryptography import x509

from ccpipe.evidence.cert_extensions import vcek_extensions
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.snp_report import processor_generation
from ccpipe.stages.attest.errors import CertificateChainInvalid, EvidenceMalformed
from ccpipe.stages.attest.verifiers._x509 import (
    check_validity,
    load_pem_chain,
    sha256_fingerprint,
    verify_signed_by,
)
from ccpipe.stages.attest.verifiers.anchors import anchor_bytes

PRODUCTS = ("Milan", "Genoa", "Turin")



@dataclass(frozen=True)
class AmdRoots:
    """One trust anchor set: the ARK and the two intermediates it signed."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate | None
    emulated: bool = False


@cache
def builtin_roots(product: str) -> AmdRoots:
    """AMD's shipped ASK/ARK/ASVK for ``product`` (Milan, Genoa, Turin)."""
    ask, ark, asvk = load_pem_chain(anchor_bytes(f"amd_{product.lower()}.pem"), f"AMD {product} roots")
    return AmdRoots(product=product, ark=ark, ask=ask, asvk=asvk)


def emulated_roots(pem: bytes) -> list[AmdRoots]:
    """The emulated development roots in ``pem``: per set a self-signed ARK plus the ASK (and ASVK) it
    signed, in any order; several sets (one per vouched host) may follow each other.

    Every emulated ARK has the same subject, so a certificate is assigned to the ARK whose key
    signed it, not by name. Raises :class:`EvidenceMalformed` for a certificate no ARK signed.
    """
    certs = load_pem_chain(pem, "emulated SEV-SNP roots")
    arks = [c for c in certs if c.issuer == c.subject]
    if not arks:
        raise EvidenceMalformed("emulated SEV-SNP roots must hold a self-signed ARK")
    signed: dict[int, list[x509.Certificate]] = {id(a): [] for a in arks}
    for cert in certs:
        if any(cert is a for a in arks):
            continue
        owner = next((a for a in arks if _signed_by(cert, a)), None)
        if owner is None:
            raise EvidenceMalformed(f"emulated SEV-SNP root certificate {cert.subject.rfc4514_string()} "
                                    "is not signed by any ARK given with it")
        signed[id(owner)].append(cert)
    sets = []
    for ark in arks:
        vlek = [c for c in signed[id(ark)] if "VLEK" in c.subject.rfc4514_string()]
        ask = [c for c in signed[id(ark)] if c not in vlek]
        sets.append(AmdRoots(product="emulated", ark=ark, ask=ask[0] if ask else ark,
                             asvk=vlek[0] if vlek else None, emulated=True))
    return sets


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        verify_signed_by(cert, issuer, "emulated root")
    except CertificateChainInvalid:
        return False
    return True


def product_from_cpuid(family: int | None, model: int | None) -> str | None:
    """Processor generation from the report's CPUID family/model (report v3+) among those whose
    roots ship with the verifier (Milan, Genoa, Turin); None otherwise."""
    product = processor_generation(family, model)
    return product if product in ("Milan", "Genoa", "Turin") else None


@dataclass(frozen=True)
class VekInfo:
    """What an AMD endorsement key certificate certifies."""

    kind: str
    """``VCEK`` or ``VLEK`` (from the subject CN ``SEV-VCEK`` / ``SEV-VLEK``)."""
    product: str | None
    """Product name without stepping (``Milan`` from ``Milan-B0``), if the extension is present."""
    tcb: dict[str, int]
    """Security patch levels: bootloader, tee, snp, microcode (and fmc on Turin)."""
    hwid: bytes | None
    """Chip id the VCEK was issued for (64 bytes; 8 on Turin); None for a VLEK."""


def vek_info(cert: x509.Certificate) -> VekInfo:
    """Read the AMD extensions of a VCEK/VLEK; raises :class:`EvidenceMalformed` if they are unreadable."""
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    kind = "VLEK" if "VLEK" in cn else "VCEK"
    try:
        ext = vcek_extensions(cert)  # the one reader of the AMD extensions (ccpipe.evidence)
    except MalformedEvidence as exc:
        raise EvidenceMalformed(f"{kind} certificate: unreadable AMD extension ({exc.message})") from exc
    tcb = {"bootloader": ext.bl_spl, "tee": ext.tee_spl, "snp": ext.snp_spl, "microcode": ext.ucode_spl}
    if ext.fmc_spl is not None:
        tcb["fmc"] = ext.fmc_spl
    product = ext.product_name.split("-")[0] if ext.product_name else None
    return VekInfo(kind=kind, product=product, tcb=tcb, hwid=ext.hw_id)


_VERIFIED_CHAINS: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()


def verify_vek_chain(
    vek: x509.Certificate,
    kind: str,
    roots: AmdRoots,
    *,
    provided_ark: x509.Certificate | None,
    provided_ask: x509.Certificate | None,
    at: datetime | None,
) -> None:
    """Check ARK (self-signed, the anchor) → ASK/ASVK → VEK, each link RSASSA-PSS SHA-384.

    A provided ARK must be the anchor itself; a provided ASK/ASVK must be signed by the anchor
    (else the anchor's own intermediate is used). ``at`` (when not None) is checked against every
    validity period. Raises :class:`CertificateChainInvalid` / ``CertificateExpired``.
    """
    name = roots.product
    if provided_ark is not None and sha256_fingerprint(provided_ark) != sha256_fingerprint(roots.ark):
        raise CertificateChainInvalid(f"the ARK sent with the evidence is not AMD's {name} ARK")
    intermediate = roots.asvk if kind == "VLEK" else roots.ask
    label = "ASVK" if kind == "VLEK" else "ASK"
    if provided_ask is not None:
        intermediate = provided_ask
    if intermediate is None:
        raise CertificateChainInvalid(f"no {name} {label} to check a {kind} against")
    # The three signatures depend only on the three certificates' bytes, so a chain that
    # verified once is remembered (by fingerprints); validity periods are checked every time.
    key = (sha256_fingerprint(vek), sha256_fingerprint(intermediate), sha256_fingerprint(roots.ark))
    if key not in _VERIFIED_CHAINS:
        verify_signed_by(roots.ark, roots.ark, f"{name} ARK")
        verify_signed_by(intermediate, roots.ark, f"{name} {label}")
        verify_signed_by(vek, intermediate, f"{kind} against the {name} {label}")
        with _VERIFIED_LOCK:
            _VERIFIED_CHAINS[key] = None
            while len(_VERIFIED_CHAINS) > _VERIFIED_MAX:
                _VERIFIED_CHAINS.popitem(last=False)
    if at is not None:
        for cert, what in ((roots.ark, "ARK"), (intermediate, label), (vek, kind)):
            check_validity(cert, at, f"the {name} {what}")


def hwid_for_store(chip_id: bytes, product: str) -> bytes:
    """The hwID KDS keys a VCEK by: the whole chip id, or its first 8 bytes on Turin."""
    return chip_id[:8] if product == "Turin" else chip_id


def vcek_store_path(store: Path, chip_id: bytes, product: str, tcb: dict[str, int]) -> Path:
    """Where the offline store keeps the VCEK for this chip and reported TCB."""
    name = f"bl{tcb['bootloader']}_tee{tcb['tee']}_snp{tcb['snp']}_ucode{tcb['microcode']}"
    if product == "Turin":
        name += f"_fmc{tcb.get('fmc', 0)}"
    return store / "vcek" / hwid_for_store(chip_id, product).hex() / f"{name}_vcek.der"


def load_from_store(store: Path, chip_id: bytes, product: str, tcb: dict[str, int]) -> bytes | None:
    """The DER VCEK from the offline store, or None when the store has none for this chip/TCB."""
    path = vcek_store_path(store, chip_id, product, tcb)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
