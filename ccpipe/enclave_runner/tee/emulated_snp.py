"""Emulated SEV-SNP: real-layout attestation reports signed by the installation's emulated VCEK.

The report is what a Genoa guest's firmware would sign (version 3, VMPL 0, VCEK-signed,
guest policy 0x30000: SMT allowed, debug and migration agent off), with:

* ``measurement`` = :func:`~ccpipe.evidence.measurement.launch_measurement_for` of the
  runner's package and launch configuration (or an explicit value);
* ``host_data`` = the initdata digest (:func:`~ccpipe.evidence.initdata.initdata_digest`),
  set at construction ("launch") or per call;
* ``chip_id`` and the reported TCB of the emulated platform, which the VCEK's hwID and SPL
  extensions certify, exactly as AMD's KDS does;
* an ECDSA P-384/SHA-384 signature over bytes ``[0, 0x2A0)``, r and s little-endian.

Evidence: Trustee's SNP JSON with ``cert_chain`` = VCEK, ASK, ARK (all emulated).
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ccpipe.enclave_runner.tee.emulated_pki import snp_store
from ccpipe.evidence.errors import EmulatedPkiError
from ccpipe.evidence.interface import REPORT_DATA_SIZE, BackendInfo, EvidenceResult, pad_field
from ccpipe.evidence.measurement import Config, launch_measurement_for
from ccpipe.evidence.snp_evidence import CertTableEntry, SnpEvidence
from ccpipe.evidence.snp_report import (
    PLATFORM_SMT_ENABLED,
    POLICY_RESERVED_ONE,
    POLICY_SMT_ALLOWED,
    SIG_ALGO_ECDSA_P384_SHA384,
    SnpReport,
    TcbVersion,
)
from ccpipe.schemas.spec_rules import TeeType

REPORT_VERSION = 3
GUEST_POLICY = POLICY_RESERVED_ONE | POLICY_SMT_ALLOWED
PLATFORM_INFO = PLATFORM_SMT_ENABLED


class EmulatedSnpBackend:
    """Evidence from an emulated SEV-SNP guest launched with the runner's stack."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Config = b"",
        measurement: bytes | None = None,
        host_data: bytes = b"",
    ) -> None:
        """Load (or create) the emulated roots under ``data_dir`` and "launch" the guest.

        ``measurement`` defaults to :func:`launch_measurement_for` ``(config)``; ``host_data``
        (≤ 32 bytes, zero-padded) is the launch's HOST_DATA unless a call overrides it.
        Raises :class:`EmulatedPkiError` or :class:`InvalidReportData`.
        """
        store = snp_store(data_dir)
        key = store.key("vcek")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
            raise EmulatedPkiError(f"emulated VCEK key in {store.path} is not ECDSA P-384")
        self._key = key
        p = store.platform()
        try:
            fam, mod, step = p["cpuid"]
            tcb = TcbVersion.from_parts(**p["tcb"])
            major, minor, build = p["firmware"]
            chip_id = bytes.fromhex(p["chip_id"])
            if len(chip_id) != 64:
                raise ValueError("chip_id must be 64 bytes")
            self._product = str(p["product"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EmulatedPkiError(f"{store.path / 'platform.json'} is not an emulated SNP platform: {exc}") from exc
        self._chain = tuple(CertTableEntry(t, store.cert(stem).public_bytes(Encoding.DER)) for t, stem in _CHAIN)
        self._template = SnpReport(
            version=REPORT_VERSION,
            guest_svn=0,
            policy=GUEST_POLICY,
            family_id=bytes(16),
            image_id=bytes(16),
            vmpl=0,
            signature_algo=SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb=tcb,
            platform_info=PLATFORM_INFO,
            key_info=0,  # VCEK-signed, chip id not masked
            report_data=bytes(64),
            measurement=pad_field(
                measurement if measurement is not None else launch_measurement_for(config), 48, "measurement"
            ),
            host_data=pad_field(host_data, 32, "host_data"),
            id_key_digest=bytes(48),
            author_key_digest=bytes(48),
            report_id=secrets.token_bytes(32),
            report_id_ma=b"\xff" * 32,
            reported_tcb=tcb,
            cpuid_fam_id=fam,
            cpuid_mod_id=mod,
            cpuid_step=step,
            chip_id=chip_id,
            committed_tcb=tcb,
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb=tcb,
            launch_mit_vector=None,
            current_mit_vector=None,
            signature_r=bytes(72),
            signature_s=bytes(72),
        )
        self._info = BackendInfo(TeeType.SNP, "emulated", True, f"emulated AMD SEV-SNP ({self._product})")

    @property
    def measurement(self) -> bytes:
        """The launch measurement the reports carry (the reference value to publish)."""
        return self._template.measurement

    def describe(self) -> BackendInfo:
        """Emulated SEV-SNP."""
        return self._info

    def report(self, report_data: bytes, *, host_data: bytes | None = None) -> SnpReport:
        """A signed report binding ``report_data`` (≤ 64 bytes) and ``host_data`` (≤ 32 bytes)."""
        hd = self._template.host_data if host_data is None else pad_field(host_data, 32, "host_data")
        rd = pad_field(report_data, REPORT_DATA_SIZE, "report_data")
        unsigned = dataclasses.replace(self._template, report_data=rd, host_data=hd)
        r, s = decode_dss_signature(self._key.sign(unsigned.signed_portion(), ec.ECDSA(hashes.SHA384())))
        return unsigned.with_signature(r, s)

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Trustee SNP evidence JSON for a fresh report; see :meth:`report`."""
        report = self.report(report_data, host_data=host_data)
        evidence = SnpEvidence(report, self._chain).to_bytes()
        return EvidenceResult(TeeType.SNP, "emulated", True, self._info.product, evidence, report.report_data)


_CHAIN = (("VCEK", "vcek"), ("ASK", "ask"), ("ARK", "ark"))
