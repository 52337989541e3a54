"""AMD SEV-SNP verifier: attestation report versions 2–5, VCEK/VLEK → ASK/ASVK → ARK, TCB and
guest-policy checks, and the report_data / host_data binding.

Steps are numbered against the AMD SEV-SNP Firmware ABI Specification rev 1.57 (publication
56860): §7.3 Table 22 (ATTESTATION_REPORT), §4.3 Table 9 (guest policy), §2.2 (TCB_VERSION),
§3 and the VCEK/KDS spec rev 1.00 §3 (endorsement keys and their extensions).
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccpipe.evidence.snp_evidence import CertTableEntry, SnpEvidence, snp_report_from_json
from ccpipe.evidence.snp_report import REPORT_SIZE, SnpReport, TcbVersion, parse_snp_report, signed_portion
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import (
    CertificateChainInvalid,
    DebugNotAllowed,
    EmulatedNotAllowed,
    EndorsementMissing,
    EvidenceMalformed,
    EvidenceSignatureInvalid,
    EvidenceUnsupported,
    MigrationAgentNotAllowed,
    TcbMismatch,
    TcbTooLow,
    VmplNotAllowed,
)
from ccpipe.stages.attest.verifiers._binding import check_binding, layout_errors
from ccpipe.stages.attest.verifiers._x509 import load_der
from ccpipe.stages.attest.verifiers.config import VerifierConfig
from ccpipe.stages.attest.verifiers.interface import Binding, Claims, evidence_json
from ccpipe.stages.attest.verifiers.snp_certs import (
    AmdRoots,
    VekInfo,
    builtin_roots,
    emulated_roots,
    load_from_store,
    product_from_cpuid,
    vek_info,
    verify_vek_chain,
)

POLICY_SMT = 1 << 16
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20


def parse_report(raw: bytes) -> SnpReport:
    """The report layout of :mod:`ccpipe.evidence.snp_report` (its one home), with the
    parser's errors turned into the verifier's: :class:`EvidenceMalformed` / :class:`EvidenceUnsupported`."""
    with layout_errors():
        return parse_snp_report(raw)


def tcb_fields(tcb: TcbVersion) -> dict[str, int]:
    """A TCB_VERSION as the SVNs a VCEK certifies (``fmc`` only in the Turin layout)."""
    out = {"bootloader": tcb.bootloader, "tee": tcb.tee, "snp": tcb.snp, "microcode": tcb.microcode}
    if tcb.fmc is not None:
        out = {"fmc": tcb.fmc, **out}
    return out


@functools.lru_cache(maxsize=1024)
def _cert(der: bytes, what: str) -> x509.Certificate:
    """A parsed certificate. Cached by its bytes: a platform sends the same VCEK/ASK/ARK with
    every report, and parsing them costs as much as a signature check. Certificates are
    immutable, and every check that depends on the time or the report is still done per call."""
    return load_der(der, what)


@functools.lru_cache(maxsize=1024)
def _vek(der: bytes, what: str) -> tuple[x509.Certificate, VekInfo]:
    """A parsed VCEK/VLEK and its AMD extensions (cached like :func:`_cert`)."""
    cert = _cert(der, what)
    return cert, vek_info(cert)


def snp_evidence(report: bytes, certs: dict[str, bytes] | None = None) -> bytes:
    """Trustee's SNP evidence JSON for a raw report and DER certificates keyed by type (VCEK, ASK…)."""
    chain = tuple(CertTableEntry(k, v) for k, v in (certs or {}).items()) or None
    return SnpEvidence(parse_report(report), chain).to_bytes()


def _decode(evidence: bytes) -> tuple[bytes, dict[str, bytes]]:
    """Step 0: the raw report and the certificates sent with it, from JSON or raw bytes."""
    if len(evidence) == REPORT_SIZE and not evidence.lstrip().startswith(b"{"):
        return evidence, {}
    try:
        obj = evidence_json(evidence)
    except ValueError as exc:  # not UTF-8, not JSON, or nested too deeply
        raise EvidenceMalformed(
            f"SEV-SNP evidence is neither a {REPORT_SIZE}-byte report nor JSON ({len(evidence)} bytes)"
        ) from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("attestation_report"), dict):
        raise EvidenceMalformed("SEV-SNP evidence JSON needs an 'attestation_report' object")
    with layout_errors():
        raw = snp_report_from_json(obj["attestation_report"]).serialize()
    certs: dict[str, bytes] = {}
    chain = obj.get("cert_chain") or []
    if not isinstance(chain, list):
        raise EvidenceMalformed("SEV-SNP evidence JSON: 'cert_chain' must be a list or null")
    for entry in chain:
        try:
            kind = str(entry["cert_type"]).upper()
            data = entry["data"]
            certs[kind] = bytes(data) if isinstance(data, list) else base64.b64decode(data, validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise EvidenceMalformed("SEV-SNP evidence JSON: bad cert_chain entry") from exc
    return raw, certs


class SnpVerifier:
    """Verifies SEV-SNP evidence against AMD's roots (and, if allowed, the emulated root)."""

    def __init__(self, config: VerifierConfig, emulated_pem: bytes | None = None) -> None:
        """Build from ``config``; ``emulated_pem`` are the emulated backend's roots (recognised
        always, accepted only when ``config.allow_emulated``)."""
        self._config = config
        self._policy = config.snp
        pem = config.emulated_snp_roots_pem or emulated_pem
        self._emulated: list[AmdRoots] = emulated_roots(pem) if pem else []

    def verify(self, evidence: bytes, expected: Binding) -> Claims:
        """Verify SEV-SNP evidence (Trustee JSON or a raw 1184-byte report with the VCEK in the store).

        Raises :class:`EvidenceMalformed`, :class:`EvidenceUnsupported`, :class:`EndorsementMissing`,
        :class:`CertificateChainInvalid`, :class:`EmulatedNotAllowed`, :class:`TcbMismatch`,
        :class:`EvidenceSignatureInvalid`, :class:`VmplNotAllowed`, :class:`DebugNotAllowed`,
        :class:`MigrationAgentNotAllowed`, :class:`TcbTooLow`, or a binding mismatch.
        """
        raw, certs = _decode(evidence)
        # (1) Table 22: parse; VERSION 2–5 (v2 has no CPUID fields); SIGNATURE_ALGO 1 = ECDSA P-384/SHA-384.
        report = parse_report(raw)
        if not 2 <= report.version <= 5:
            raise EvidenceUnsupported(f"SEV-SNP report version {report.version} is not supported (2–5)")
        if report.version < self._policy.min_report_version:
            raise EvidenceUnsupported(
                f"SEV-SNP report version {report.version} is older than the policy's minimum "
                f"{self._policy.min_report_version}"
            )
        if report.signature_algo != 1:
            raise EvidenceUnsupported(f"SEV-SNP signature algorithm {report.signature_algo} is not ECDSA P-384")
        # (2) KEY_INFO.SIGNING_KEY: 0 = VCEK, 1 = VLEK; then the endorsement key certificate.
        kind = {0: "VCEK", 1: "VLEK"}.get(report.signing_key)
        if kind is None:
            raise EvidenceUnsupported(f"SEV-SNP report signed by key {report.signing_key} (neither VCEK nor VLEK)")
        product = self._product(report, certs.get(kind))
        vek_der = certs.get(kind)
        if vek_der is None and kind == "VCEK" and self._policy.vcek_store is not None:
            vek_der = load_from_store(
                self._policy.vcek_store,
                report.chip_id,
                product or "Milan",
                tcb_fields(report.reported_tcb),
            )
        if vek_der is None:
            raise EndorsementMissing(f"no {kind} for this SEV-SNP report (chip {report.chip_id[:8].hex()}…)")
        vek, info = _vek(vek_der, kind)
        product = product or info.product
        # (3) VEK → ASK/ASVK → ARK of the product; the emulated root only if configured.
        roots, emulated = self._chain(vek, kind, product, certs)
        tcb = tcb_fields(report.reported_tcb)
        # (4) VCEK extensions vs the report: hwID == CHIP_ID, SPLs == REPORTED_TCB.
        self._check_vek_matches(report, info, tcb, roots.product)
        # (5) §7.3: ECDSA P-384 with SHA-384 over bytes 0x0–0x29F; R and S little-endian.
        self._check_signature(report, raw, vek)
        # (6) Table 22 VMPL; Table 9 policy bits DEBUG (19), MIGRATE_MA (18); minimum TCB.
        self._check_policy(report, tcb)
        # (7) REPORT_DATA, HOST_DATA (initdata digest), MEASUREMENT against the binding.
        check_binding(
            expected,
            report_data=report.report_data,
            init_data=report.host_data,
            measurement=report.measurement,
            init_data_name="host_data",
        )
        return self._claims(
            report,
            tcb,
            roots.product if not emulated else f"{product or 'unknown'} (emulated)",
            emulated,
            kind,
        )

    def _product(self, report: SnpReport, vek_der: bytes | None) -> str | None:
        """The processor generation, from CPUID (v3+) or, failing that, the VEK's product name."""
        product = None
        if report.version >= 3 and report.cpuid_fam_id:
            product = product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
            if product is None:
                raise EvidenceUnsupported(
                    f"unknown SEV-SNP processor (family {report.cpuid_fam_id:#x}, model {report.cpuid_mod_id:#x})"
                )
        if product is None and vek_der is not None:
            product = _vek(vek_der, "VEK")[1].product
        if product is not None and product not in self._policy.products and product in ("Milan", "Genoa", "Turin"):
            raise EvidenceUnsupported(f"SEV-SNP product {product} is not accepted by policy")
        return product

    def _chain(
        self, vek: x509.Certificate, kind: str, product: str | None, certs: dict[str, bytes]
    ) -> tuple[AmdRoots, bool]:
        at = self._config.time() if self._policy.check_certificate_dates else None
        ark = _cert(certs["ARK"], "ARK") if "ARK" in certs else None
        ask_der = certs.get("ASVK" if kind == "VLEK" else "ASK")
        ask = _cert(ask_der, "ASK") if ask_der else None
        candidates = [product] if product in self._policy.products else list(self._policy.products)
        error: CertificateChainInvalid | None = None
        for name in candidates:
            if name is None:
                continue
            roots = builtin_roots(name)
            try:
                verify_vek_chain(vek, kind, roots, provided_ark=ark, provided_ask=ask, at=at)
                return roots, False
            except CertificateChainInvalid as exc:
                # Kept without its traceback: the traceback's frames would hold this whole
                # verification (evidence, report) in a reference cycle until the next GC pass.
                error = error or exc.with_traceback(None)
        for emulated in self._emulated:
            try:
                verify_vek_chain(vek, kind, emulated, provided_ark=None, provided_ask=None, at=at)
            except CertificateChainInvalid:
                continue
            if not self._config.allow_emulated:
                raise EmulatedNotAllowed("SEV-SNP evidence is signed by the emulated development root")
            return emulated, True
        raise error or CertificateChainInvalid(f"no accepted AMD product for this {kind}")

    @staticmethod
    def _check_vek_matches(report: SnpReport, info: VekInfo, tcb: dict[str, int], product: str) -> None:
        if info.kind == "VCEK" and info.hwid is not None:
            chip = report.chip_id[: len(info.hwid)] if product == "Turin" else report.chip_id
            if chip != info.hwid:
                raise TcbMismatch("the VCEK was issued for another chip (hwID ≠ CHIP_ID)")
        for name, value in info.tcb.items():
            if name in tcb and tcb[name] != value:
                raise TcbMismatch(f"reported TCB {name} is {tcb[name]} but the {info.kind} certifies {value}")

    @staticmethod
    def _check_signature(report: SnpReport, raw: bytes, vek: x509.Certificate) -> None:
        key = vek.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CertificateChainInvalid("the endorsement key is not an ECDSA key")
        r = int.from_bytes(report.signature_r, "little")
        s = int.from_bytes(report.signature_s, "little")
        try:
            key.verify(encode_dss_signature(r, s), signed_portion(raw), ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError) as exc:
            raise EvidenceSignatureInvalid("the SEV-SNP report signature does not verify with its VCEK/VLEK") from exc

    def _check_policy(self, report: SnpReport, tcb: dict[str, int]) -> None:
        p = self._policy
        if report.vmpl > p.max_vmpl:
            raise VmplNotAllowed(f"the report comes from VMPL {report.vmpl}; policy allows up to {p.max_vmpl}")
        if report.policy & POLICY_DEBUG and not p.allow_debug:
            raise DebugNotAllowed("the SEV-SNP guest policy allows debugging (bit 19)")
        if report.policy & POLICY_MIGRATE_MA and not p.allow_migration_agent:
            raise MigrationAgentNotAllowed("the SEV-SNP guest policy allows a migration agent (bit 18)")
        if p.min_tcb is not None:
            for name, minimum in p.min_tcb.model_dump(exclude_none=True).items():
                if tcb.get(name, 0) < minimum:
                    raise TcbTooLow(f"reported TCB {name} {tcb.get(name, 0)} is below the minimum {minimum}")

    @staticmethod
    def _claims(report: SnpReport, tcb: dict[str, int], product: str, emulated: bool, kind: str) -> Claims:
        pol, plat = report.policy, report.platform_info
        policy = {
            "policy_abi_major": (pol >> 8) & 0xFF,
            "policy_abi_minor": pol & 0xFF,
            "policy_smt_allowed": bool(pol & POLICY_SMT),
            "policy_migrate_ma": bool(pol & POLICY_MIGRATE_MA),
            "policy_debug_allowed": bool(pol & POLICY_DEBUG),
            "policy_single_socket": bool(pol & POLICY_SINGLE_SOCKET),
        }
        fields: dict[str, Any] = {
            **policy,
            **{f"reported_tcb_{k}": v for k, v in tcb.items()},
            "platform_smt_enabled": bool(plat & 1),
            "platform_tsme_enabled": bool(plat & 2),
            "measurement": report.measurement.hex(),
            "report_data": report.report_data.hex(),
            "init_data": report.host_data.hex(),
            "chip_id": report.chip_id.hex(),
            "version": report.version,
            "guest_svn": report.guest_svn,
            "vmpl": report.vmpl,
            "family_id": report.family_id.hex(),
            "image_id": report.image_id.hex(),
            "id_key_digest": report.id_key_digest.hex(),
            "author_key_digest": report.author_key_digest.hex(),
            "report_id": report.report_id.hex(),
            "signing_key": kind,
            "firmware": f"{report.current_major}.{report.current_minor}.{report.current_build}",
            "emulated": emulated,
        }
        return Claims(
            tee=TeeType.SNP,
            product=product,
            emulated=emulated,
            measurement=report.measurement.hex(),
            report_data=report.report_data.hex(),
            init_data=report.host_data.hex(),
            tcb=dict(tcb),
            debug=bool(pol & POLICY_DEBUG),
            policy=policy,
            fields=fields,
        )
