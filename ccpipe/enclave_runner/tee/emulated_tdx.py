"""Emulated TDX: DCAP quotes v4 signed by the installation's emulated attestation key.

The quote is what Intel's TD quoting enclave would produce for a TD 1.0 guest:

* header: version 4, ECDSA P-256 key type, TEE type 0x81, Intel's QE vendor id;
* TD report body: MRTD and RTMR0..3 of the runner's stack
  (:func:`~ccpipe.evidence.measurement.tdx_measurements_for`), ``MRCONFIGID`` = the
  initdata digest padded to 48 bytes (SHA-256 ‖ 16 zero bytes, see :mod:`ccpipe.evidence.initdata`),
  ``report_data``, TD attributes with DEBUG off (SEPT_VE_DISABLE set), the emulated
  platform's TEE_TCB_SVN and MRSEAM;
* signature data: ECDSA P-256/SHA-256 by the attestation key over header ‖ body, the
  attestation key, and certification data type 6: a QE report (signed by the emulated PCK
  key) whose report_data is SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes, the QE
  auth data, and certification data type 5: the PEM chain PCK ← PCK Platform CA ← Root CA.

:mod:`.emulated_tdx_collateral` signs the matching TCB info and QE identity, which this backend
publishes for verifiers (:func:`~.emulated_tdx_collateral.ensure_published`). Evidence:
Trustee's TDX JSON ``{"cc_eventlog": null, "quote": <base64>}`` (no event log is emulated, so
a verifier checks the RTMRs against reference values only).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ccpipe.enclave_runner.tee import emulated_tdx_collateral
from ccpipe.enclave_runner.tee.emulated_pki import (
    QE_ATTRIBUTES,
    QE_ISV_PROD_ID,
    load_p256_key,
    sign_p256_raw,
    tdx_store,
)
from ccpipe.evidence.errors import EmulatedPkiError, MalformedEvidence
from ccpipe.evidence.interface import REPORT_DATA_SIZE, BackendInfo, EvidenceResult, pad_field
from ccpipe.evidence.measurement import Config, TdxMeasurements, tdx_measurements_for
from ccpipe.evidence.tdx_quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    BODY_TYPE_TD10,
    CERT_TYPE_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_TDX,
    QuoteHeader,
    SgxReportBody,
    TdQuoteBody,
    TdxEvidence,
    TdxQuote,
)
from ccpipe.schemas.spec_rules import TeeType

TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")  # SEPT_VE_DISABLE; bit 0 (DEBUG) off
XFAM = bytes.fromhex("e702060000000000")


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    """An uncompressed P-256 point without its 0x04 prefix: x ‖ y."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]


class EmulatedTdxBackend:
    """Evidence from an emulated TD launched with the runner's stack."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Config = b"",
        measurements: TdxMeasurements | None = None,
        mr_config_id: bytes = b"",
    ) -> None:
        """Load (or create) the emulated roots under ``data_dir`` and "launch" the TD.

        ``measurements`` default to :func:`tdx_measurements_for` ``(config)``; ``mr_config_id``
        (≤ 48 bytes, zero-padded) is the launch's MRCONFIGID unless a call overrides it.
        Raises :class:`EmulatedPkiError` or :class:`InvalidReportData`.
        """
        store = tdx_store(data_dir)
        self._key = load_p256_key(store, "attestation")
        pck_key = load_p256_key(store, "pck")
        p = store.platform()
        self._data_dir, self._fmspc = data_dir, str(p.get("fmspc", ""))
        emulated_tdx_collateral.ensure_published(data_dir, self._fmspc)
        m = measurements or tdx_measurements_for(config)
        attestation_key = _point(self._key.public_key())
        launch_config_id = pad_field(mr_config_id, 48, "mr_config_id")
        try:
            qe_auth = bytes.fromhex(p["qe_auth_data"])
            binding = hashlib.sha256(attestation_key + qe_auth).digest() + bytes(32)
            qe_report = SgxReportBody(
                cpu_svn=bytes.fromhex(p["cpu_svn"]),
                misc_select=0,
                reserved1=bytes(12),
                isv_ext_prod_id=bytes(16),
                attributes=QE_ATTRIBUTES,
                mr_enclave=hashlib.sha256(b"ccpipe/emulated-td-qe/enclave/v1").digest(),
                reserved2=bytes(32),
                mr_signer=bytes.fromhex(p["qe_mrsigner"]),
                reserved3=bytes(32),
                config_id=bytes(64),
                isv_prod_id=QE_ISV_PROD_ID,
                isv_svn=int(p["qe_isv_svn"]),
                config_svn=0,
                reserved4=bytes(42),
                isv_family_id=bytes(16),
                report_data=binding,
            )
            body = TdQuoteBody(
                tee_tcb_svn=bytes.fromhex(p["tee_tcb_svn"]),
                mr_seam=bytes.fromhex(p["mr_seam"]),
                mr_signer_seam=bytes(48),
                seam_attributes=bytes(8),
                td_attributes=TD_ATTRIBUTES,
                xfam=XFAM,
                mr_td=m.mr_td,
                mr_config_id=launch_config_id,
                mr_owner=bytes(48),
                mr_owner_config=bytes(48),
                rtmr0=m.rtmrs[0],
                rtmr1=m.rtmrs[1],
                rtmr2=m.rtmrs[2],
                rtmr3=m.rtmrs[3],
                report_data=bytes(64),
            )
        except (KeyError, TypeError, ValueError, MalformedEvidence) as exc:
            raise EmulatedPkiError(f"{store.path / 'platform.json'} is not an emulated TDX platform: {exc}") from exc
        chain = b"".join(store.cert(stem).public_bytes(Encoding.PEM) for stem in ("pck", "pck-ca", "root-ca"))
        header = QuoteHeader(
            version=4,
            att_key_type=ATT_KEY_TYPE_ECDSA_P256,
            tee_type=TEE_TYPE_TDX,
            qe_svn=0,
            pce_svn=0,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=hashlib.sha256(attestation_key).digest()[:16] + bytes(4),
        )
        self._template = TdxQuote(
            header=header,
            body_type=BODY_TYPE_TD10,
            body=body,
            signature=bytes(64),
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=sign_p256_raw(pck_key, qe_report.serialize()),
            qe_auth_data=qe_auth,
            pck_cert_data_type=CERT_TYPE_PCK_CHAIN,
            pck_cert_data=chain,
        )
        self._body = body
        self._info = BackendInfo(TeeType.TDX, "emulated", True, "emulated Intel TDX (quote v4)")

    @property
    def measurements(self) -> TdxMeasurements:
        """MRTD and RTMRs the quotes carry (the reference values to publish)."""
        b = self._body
        return TdxMeasurements(b.mr_td, b.rtmrs)

    def describe(self) -> BackendInfo:
        """Emulated TDX."""
        return self._info

    def quote(self, report_data: bytes, *, host_data: bytes | None = None) -> TdxQuote:
        """A signed quote binding ``report_data`` (≤ 64 bytes) and MRCONFIGID ``host_data`` (≤ 48 bytes)."""
        body = dataclasses.replace(
            self._body,
            report_data=pad_field(report_data, REPORT_DATA_SIZE, "report_data"),
            mr_config_id=self._body.mr_config_id if host_data is None else pad_field(host_data, 48, "mr_config_id"),
        )
        unsigned = dataclasses.replace(self._template, body=body)
        return dataclasses.replace(unsigned, signature=sign_p256_raw(self._key, unsigned.signed_portion()))

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Trustee TDX evidence JSON for a fresh quote; see :meth:`quote`.

        Also reissues the platform's published collateral when it is a day old, so a verifier
        always finds collateral valid for the quotes this backend produces.
        """
        quote = self.quote(report_data, host_data=host_data)
        emulated_tdx_collateral.ensure_published(self._data_dir, self._fmspc)
        evidence = TdxEvidence(quote.serialize()).to_bytes()
        return EvidenceResult(TeeType.TDX, "emulated", True, self._info.product, evidence, quote.td_body.report_data)
