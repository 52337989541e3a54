"""Intel TDX verifier: DCAP quotes v4 and v5, PCK chain to the Intel SGX Root CA, QE report and
attestation-key binding, TCB status from offline collateral, TD attributes and the binding of
report_data / MRCONFIGID.

Steps are numbered against Intel's "TDX DCAP Quoting Library API" Appendix A (quote format v4
§A.3, v5 §A.4; signature data §A.3.8–A.3.11) and the PCS API v4 collateral documents.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccpipe.evidence.dcap_collateral import TdxCollateral, load_collateral_dir
from ccpipe.evidence.tdx_quote import TdxQuote
from ccpipe.evidence.tdx_quote import parse_tdx_quote as _parse_tdx_quote
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import (
    AttestationKeyBindingInvalid,
    CertificateChainInvalid,
    CollateralMissing,
    DebugNotAllowed,
    EmulatedNotAllowed,
    EvidenceMalformed,
    EvidenceSignatureInvalid,
    TcbTooLow,
)
from ccpipe.stages.attest.verifiers._binding import check_binding, layout_errors
from ccpipe.stages.attest.verifiers._x509 import (
    check_crl,
    check_validity,
    load_crl,
    load_pem_chain,
    sha256_fingerprint,
    verify_signed_by,
)
from ccpipe.stages.attest.verifiers.anchors import anchor_bytes
from ccpipe.stages.attest.verifiers.config import VerifierConfig
from ccpipe.stages.attest.verifiers.interface import Binding, Claims, evidence_json
from ccpipe.stages.attest.verifiers.tdx_collateral import (
    check_fresh,
    evaluate_qe_identity,
    evaluate_tcb,
    pck_info,
    verify_signed_json,
    worst,
)

TD_DEBUG = 1 << 0
TD_SEPT_VE_DISABLE = 1 << 28
TD_PKS = 1 << 30
TD_KL = 1 << 31
TD_PERFMON = 1 << 63


def intel_root() -> x509.Certificate:
    """The shipped Intel SGX Root CA."""
    return load_pem_chain(anchor_bytes("intel_sgx_root_ca.pem"), "Intel SGX Root CA")[0]


def parse_tdx_quote(raw: bytes) -> TdxQuote:
    """The quote layout of :mod:`ccpipe.evidence.tdx_quote` (its one home), with the parser's
    errors turned into the verifier's: :class:`EvidenceMalformed` / :class:`EvidenceUnsupported`."""
    with layout_errors():
        return _parse_tdx_quote(raw)


def _decode(evidence: bytes) -> bytes:
    """Step 0: the raw quote, from Trustee's ``{"quote": b64, "cc_eventlog": …}`` or raw bytes."""
    if evidence[:2] in (b"\x04\x00", b"\x05\x00", b"\x03\x00"):
        return evidence
    try:
        return base64.b64decode(evidence_json(evidence)["quote"], validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise EvidenceMalformed(f"TDX evidence is neither a quote nor Trustee's JSON ({len(evidence)} bytes)") from exc


def _p256_verify(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> None:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


class TdxVerifier:
    """Verifies TDX quotes against the Intel root (and, if allowed, the emulated root)."""

    def __init__(
        self,
        config: VerifierConfig,
        emulated_root_pem: bytes | None = None,
        collateral: dict[str, TdxCollateral] | None = None,
        emulated_collateral: dict[str, dict[str, TdxCollateral]] | None = None,
    ) -> None:
        """Build from ``config``; ``collateral`` maps lower-case FMSPC → collateral and takes
        precedence over ``config.tdx.collateral_dir``; ``emulated_root_pem`` (one or more emulated
        root CAs) is recognised always and accepted only when ``config.allow_emulated``.

        ``emulated_collateral`` maps an emulated root's SHA-256 fingerprint (hex) to the collateral
        its platform published: every emulated platform has the same fictitious FMSPC, so a quote
        chaining to one emulated root is judged by that root's collateral only.
        """
        self._config = config
        self._policy = config.tdx
        self._root = intel_root()
        pem = config.emulated_tdx_root_pem or emulated_root_pem
        roots = load_pem_chain(pem, "emulated TDX root") if pem else []
        self._emulated_roots = {sha256_fingerprint(r): r for r in roots}
        self._collateral = {k.lower(): v for k, v in (collateral or {}).items()}
        self._emulated_collateral = {
            fp: {k.lower(): v for k, v in by_fmspc.items()} for fp, by_fmspc in (emulated_collateral or {}).items()
        }

    def verify(self, evidence: bytes, expected: Binding) -> Claims:
        """Verify a TDX quote (raw, or Trustee's JSON) and its binding to ``expected``.

        Raises :class:`EvidenceMalformed`, :class:`EvidenceUnsupported` (SGX quote, v3),
        :class:`CertificateChainInvalid` (and ``CertificateExpired``/``CertificateRevoked``),
        :class:`EmulatedNotAllowed`, :class:`EvidenceSignatureInvalid`,
        :class:`AttestationKeyBindingInvalid`, collateral errors, :class:`QeIdentityMismatch`,
        :class:`TcbTooLow` / ``TcbLevelNotSupported``, :class:`DebugNotAllowed` or a binding mismatch.
        """
        # (1) §A.3/§A.4: header, TD report body (v4: 584 bytes; v5: type 2/3), signature data.
        raw = _decode(evidence)
        quote = parse_tdx_quote(raw)
        at = self._config.time()
        # (2) §A.3.11 certification data type 5: PCK leaf → PCK Platform/Processor CA → Intel root.
        pck, inter, emulated_root = self._pck_chain(quote)
        emulated = emulated_root is not None
        # (3) §A.3.10: the QE report is signed by the PCK key (ECDSA P-256, SHA-256).
        pck_key = pck.public_key()
        if not isinstance(pck_key, ec.EllipticCurvePublicKey):
            raise CertificateChainInvalid("the PCK key is not an ECDSA P-256 key")
        try:
            _p256_verify(pck_key, quote.qe_report_signature, quote.qe_report.serialize())
        except InvalidSignature as exc:
            raise EvidenceSignatureInvalid("the QE report signature does not verify with the PCK key") from exc
        # (4) QE REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
        binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
        if not hmac.compare_digest(binding, quote.qe_report.report_data):
            raise AttestationKeyBindingInvalid("the QE report does not bind the quote's attestation key")
        # (5) §A.3.8: the quote signature over header ‖ body, by the attestation key.
        try:
            att_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
            _p256_verify(att_key, quote.signature, raw[: quote.body_offset + quote.td_body.size])
        except (InvalidSignature, ValueError) as exc:
            raise EvidenceSignatureInvalid("the TDX quote signature does not verify with its attestation key") from exc
        # (6) Collateral: TCB status of the platform, the TDX module and the QE.
        tcb = self._tcb(quote, pck, inter, emulated_root, at)
        # (7) TD attributes: DEBUG (bit 0) makes the TD's memory readable by the host.
        attrs = int.from_bytes(quote.td_body.td_attributes, "little")
        if attrs & TD_DEBUG and not self._policy.allow_debug:
            raise DebugNotAllowed("the TD has the DEBUG attribute (td_attributes bit 0)")
        # (8) REPORTDATA, MRCONFIGID (initdata digest), MRTD against the binding.
        check_binding(
            expected,
            report_data=quote.td_body.report_data,
            init_data=quote.td_body.mr_config_id,
            measurement=quote.td_body.mr_td,
            init_data_name="mr_config_id",
        )
        return self._claims(quote, tcb, attrs, emulated)

    def _pck_chain(self, quote: TdxQuote) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate | None]:
        """PCK, its CA, and the emulated root the chain ends at (None: Intel's root)."""
        certs = load_pem_chain(quote.pck_chain_pem, "PCK certificate chain")
        if len(certs) != 3:
            raise CertificateChainInvalid(f"the PCK chain has {len(certs)} certificates, expected 3")
        pck, inter, root = certs
        emulated: x509.Certificate | None = None
        if sha256_fingerprint(root) != sha256_fingerprint(self._root):
            if sha256_fingerprint(root) not in self._emulated_roots:
                raise CertificateChainInvalid("the PCK chain does not end at the Intel SGX Root CA")
            if not self._config.allow_emulated:
                raise EmulatedNotAllowed("the TDX quote is signed by the emulated development root")
            emulated = self._emulated_roots[sha256_fingerprint(root)]
        verify_signed_by(root, root, "root CA")
        verify_signed_by(inter, root, "PCK CA")
        verify_signed_by(pck, inter, "PCK certificate")
        at = self._config.time()
        for cert, what in ((root, "root CA"), (inter, "PCK CA"), (pck, "PCK certificate")):
            check_validity(cert, at, what)
        return pck, inter, emulated

    def _collateral_for(self, fmspc: str) -> TdxCollateral | None:
        if fmspc.lower() in self._collateral:
            return self._collateral[fmspc.lower()]
        if self._policy.collateral_dir is not None:
            return load_collateral_dir(self._policy.collateral_dir, fmspc)
        return None

    def _tcb(
        self, quote: TdxQuote, pck: x509.Certificate, inter: x509.Certificate,
        emulated_root: x509.Certificate | None, at: Any
    ) -> dict[str, Any]:
        info = pck_info(pck)
        own = self._emulated_collateral.get(sha256_fingerprint(emulated_root)) if emulated_root is not None else None
        coll = own.get(info.fmspc.lower()) if own is not None else self._collateral_for(info.fmspc)
        base: dict[str, Any] = {
            "fmspc": info.fmspc,
            "pce_svn": info.pce_svn,
            "sgx_tcb": list(info.sgx_tcb),
            "tee_tcb_svn": quote.td_body.tee_tcb_svn.hex(),
        }
        if coll is None:
            if self._policy.require_collateral:
                raise CollateralMissing(f"no TCB info / QE identity for FMSPC {info.fmspc}")
            return {**base, "tcb_status": "Unknown", "collateral_expiration_status": "1"}
        root = emulated_root if emulated_root is not None else self._root
        # CRLs: the root CA's CRL covers the PCK CA, the PCK CA's CRL covers the PCK certificate.
        if coll.root_crl is not None:
            check_crl(load_crl(coll.root_crl, "root CA CRL"), root, inter, "the PCK CA")
        if coll.pck_crl is not None:
            check_crl(load_crl(coll.pck_crl, "PCK CRL"), inter, pck, "the PCK certificate")
        signer = self._tcb_signer(coll, root, at)
        tcb_info = verify_signed_json(coll.tcb_info, "tcbInfo", signer, "TCB info")
        qe_id = verify_signed_json(coll.qe_identity, "enclaveIdentity", signer, "QE identity")
        reject = self._policy.expired_collateral == "reject"
        expired = check_fresh(tcb_info, at, "TCB info", reject) | check_fresh(qe_id, at, "QE identity", reject)
        qe = quote.qe_report
        qe_status = evaluate_qe_identity(qe_id, qe.mr_signer, qe.isv_prod_id, qe.misc_select, qe.attributes, qe.isv_svn)
        status, date, advisories, module_status = evaluate_tcb(
            tcb_info, info, quote.td_body.tee_tcb_svn, quote.td_body.mr_signer_seam, quote.td_body.seam_attributes
        )
        overall = worst(status, qe_status, *([module_status] if module_status else []))
        if overall not in self._policy.accepted_tcb_statuses:
            raise TcbTooLow(f"the platform's TCB status is {overall}, which the policy does not accept")
        return {
            **base,
            "tcb_status": overall,
            "platform_tcb_status": status,
            "qe_tcb_status": qe_status,
            "module_tcb_status": module_status,
            "tcb_date": date,
            "advisory_ids": advisories,
            "collateral_expiration_status": "1" if expired else "0",
            "tcb_evaluation_data_number": tcb_info.get("tcbEvaluationDataNumber"),
        }

    def _tcb_signer(self, coll: TdxCollateral, root: x509.Certificate, at: Any) -> x509.Certificate:
        chain = load_pem_chain(coll.tcb_signing_chain, "TCB signing chain")
        if not chain:
            raise CertificateChainInvalid("the TCB signing chain is empty")
        signer = chain[0]
        verify_signed_by(signer, root, "TCB Signing certificate")
        check_validity(root, at, "root CA")
        if not self._policy.allow_expired_collateral_signer:
            check_validity(signer, at, "the TCB Signing certificate")
        return signer

    @staticmethod
    def _claims(quote: TdxQuote, tcb: dict[str, Any], attrs: int, emulated: bool) -> Claims:
        b, h = quote.td_body, quote.header
        td_attributes = {
            "debug": bool(attrs & TD_DEBUG),
            "septve_disable": bool(attrs & TD_SEPT_VE_DISABLE),
            "protection_keys": bool(attrs & TD_PKS),
            "key_locker": bool(attrs & TD_KL),
            "perfmon": bool(attrs & TD_PERFMON),
        }
        body: dict[str, Any] = {
            "tcb_svn": b.tee_tcb_svn.hex(),
            "mr_seam": b.mr_seam.hex(),
            "mrsigner_seam": b.mr_signer_seam.hex(),
            "seam_attributes": b.seam_attributes.hex(),
            "td_attributes": b.td_attributes.hex(),
            "xfam": b.xfam.hex(),
            "mr_td": b.mr_td.hex(),
            "mr_config_id": b.mr_config_id.hex(),
            "mr_owner": b.mr_owner.hex(),
            "mr_owner_config": b.mr_owner_config.hex(),
            **{f"rtmr_{i}": r.hex() for i, r in enumerate(b.rtmrs)},
            "report_data": b.report_data.hex(),
        }
        if b.tee_tcb_svn2 is not None and b.mr_servicetd is not None:
            body["tcb_svn_2"] = b.tee_tcb_svn2.hex()
            body["mr_servicetd"] = b.mr_servicetd.hex()
        fields: dict[str, Any] = {
            "quote": {
                "header": {
                    "version": h.version.to_bytes(2, "little").hex(),
                    "att_key_type": h.att_key_type.to_bytes(2, "little").hex(),
                    "tee_type": h.tee_type.to_bytes(4, "little").hex(),
                    "reserved": (h.qe_svn.to_bytes(2, "little") + h.pce_svn.to_bytes(2, "little")).hex(),
                    "vendor_id": h.qe_vendor_id.hex(),
                    "user_data": h.user_data.hex(),
                },
                "body": body,
                "type": quote.body_type,
            },
            "td_attributes": td_attributes,
            "report_data": b.report_data.hex(),
            "init_data": b.mr_config_id.hex(),
            **{
                k: v
                for k, v in tcb.items()
                if k in ("tcb_status", "tcb_date", "advisory_ids", "collateral_expiration_status")
            },
            "emulated": emulated,
        }
        return Claims(
            tee=TeeType.TDX,
            product=("TDX 1.5" if quote.body_type == 3 else "TDX 1.0") + (" (emulated)" if emulated else ""),
            emulated=emulated,
            measurement=b.mr_td.hex(),
            report_data=b.report_data.hex(),
            init_data=b.mr_config_id.hex(),
            tcb=tcb,
            debug=td_attributes["debug"],
            policy={"td_attributes": b.td_attributes.hex(), "xfam": b.xfam.hex(), **td_attributes},
            fields=fields,
        )
