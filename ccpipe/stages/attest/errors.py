"""The attestation family of errors: everything ``stages/attest`` raises.

Every class is final (not retried) except those deriving from :class:`TransientError`; each
leaf is named for what failed and carries a stable dotted code, so the KBS and the attestation
service can map it to the wire (RCAR error body, ``attestation.rejected``) without matching text.
Imports only :mod:`schemas`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput


class AttestationError(CcpipeError):
    """Evidence could not be verified, or verified evidence is refused by policy."""

    code = "attest.error"
    default_hint = "the enclave's evidence was refused; see the message for the failed check"


class EvidenceMalformed(AttestationError):
    """The evidence bytes are not a report/quote of the expected shape (truncated, garbage, bad JSON)."""

    code = "attest.evidence.malformed"
    default_hint = "send the evidence exactly as the attester produced it (Trustee's evidence JSON or the raw report)"


class EvidenceUnsupported(AttestationError):
    """Well-formed evidence of a kind or version this verifier does not accept (SGX quote to TDX, quote v3)."""

    code = "attest.evidence.unsupported"
    default_hint = "check that the TEE type named in the request matches the evidence"


class UnknownTeeType(AttestationError):
    """No verifier is registered for the requested TEE type (or it is disabled by configuration)."""

    code = "attest.verifier.unknown"
    default_hint = "use one of the accepted TEE types named in the message"


class EvidenceSignatureInvalid(AttestationError):
    """A signature over the report, the quote or the QE report does not verify."""

    code = "attest.evidence.signature"
    default_hint = "the evidence was altered or signed by another key; obtain fresh evidence from the enclave"


class AttestationKeyBindingInvalid(AttestationError):
    """The QE report does not bind the quote's attestation key (SHA-256(key ‖ auth data))."""

    code = "attest.evidence.key_binding"
    default_hint = "the quote was assembled from parts of different quotes; obtain a fresh quote"


class CertificateChainInvalid(AttestationError):
    """An endorsement certificate does not chain to the vendor root (or to an accepted root)."""

    code = "attest.evidence.chain"
    default_hint = "check that the endorsement key certificate belongs to this platform and its vendor's root"


class CertificateExpired(CertificateChainInvalid):
    """A certificate in the chain is outside its validity period at the verification time."""

    code = "attest.evidence.chain.expired"
    default_hint = "refresh the certificate (VCEK/VLEK, PCK or collateral signer) from the vendor"


class CertificateRevoked(CertificateChainInvalid):
    """A certificate in the chain is listed in the issuer's CRL."""

    code = "attest.evidence.chain.revoked"
    default_hint = "the platform's key was revoked by the vendor; this machine must not be trusted"


class EndorsementMissing(AttestationError):
    """No endorsement key certificate (VCEK/VLEK) came with the evidence nor was found in the local store."""

    code = "attest.evidence.endorsement_missing"
    default_hint = (
        "put the platform's VCEK into the offline store (vcek/<hwid>/<tcb>_vcek.der) or send it with the evidence"
    )


class CollateralMissing(AttestationError):
    """No verification collateral (TCB info, QE identity) is available for this platform."""

    code = "attest.collateral.missing"
    default_hint = "add the platform's TCB info and QE identity (from Intel PCS) to the offline collateral"


class CollateralInvalid(AttestationError):
    """Collateral is malformed, for another platform, or its signature does not verify."""

    code = "attest.collateral.invalid"
    default_hint = "download the collateral again from the vendor together with its issuer chain"


class CollateralExpired(AttestationError):
    """Collateral (TCB info, QE identity, CRL) is past its next-update time."""

    code = "attest.collateral.expired"
    default_hint = "refresh the offline collateral from the vendor, or set the policy to report expiry instead"


class QeIdentityMismatch(AttestationError):
    """The quoting enclave is not the one Intel's QE identity describes (MRSIGNER, product, attributes)."""

    code = "attest.evidence.qe_identity"
    default_hint = "the quote was not produced by Intel's TD quoting enclave"


class ReportDataMismatch(AttestationError):
    """The report_data in the evidence is not the expected binding (nonce + TEE public key)."""

    code = "attest.evidence.report_data"
    default_hint = "the evidence was produced for another challenge; start a new attestation"


class InitDataMismatch(AttestationError):
    """host_data / MRCONFIGID does not equal the digest of the expected initdata."""

    code = "attest.evidence.init_data"
    default_hint = "launch the enclave with the initdata registered for this workload"


class MeasurementMismatch(AttestationError):
    """The launch measurement (SNP measurement, TDX MRTD) is not the expected one."""

    code = "attest.evidence.measurement"
    default_hint = "the enclave runs other firmware or code than the one registered"


class DebugNotAllowed(AttestationError):
    """The guest may be debugged (SNP policy bit 19, TD attribute DEBUG) and policy forbids it."""

    code = "attest.policy.debug"
    default_hint = "launch the enclave without debugging, or allow debug in the verifier policy (development only)"


class MigrationAgentNotAllowed(AttestationError):
    """The SNP guest policy allows a migration agent and policy forbids it."""

    code = "attest.policy.migration"
    default_hint = "launch the guest with MIGRATE_MA cleared in its policy"


class VmplNotAllowed(AttestationError):
    """The SNP report was requested from a VMPL above the policy's maximum (normally 0)."""

    code = "attest.policy.vmpl"
    default_hint = "request the report from VMPL 0 (the guest kernel), not from a less privileged level"


class TcbMismatch(AttestationError):
    """The TCB reported in the evidence differs from the TCB certified in the endorsement key certificate."""

    code = "attest.tcb.mismatch"
    default_hint = "fetch the VCEK that matches the report's reported_tcb"


class TcbTooLow(AttestationError):
    """The platform TCB is below the policy's minimum or its status is not accepted."""

    code = "attest.tcb.too_low"
    default_hint = "update the platform firmware/microcode, or lower the minimum TCB in the policy"


class TcbLevelNotSupported(TcbTooLow):
    """No TCB level in the vendor's TCB info applies to this platform (below every level)."""

    code = "attest.tcb.unsupported"
    default_hint = "the platform's TCB is older than anything Intel still lists; update it"


class EmulatedNotAllowed(AttestationError):
    """Emulated or sample evidence (no hardware TEE) and policy does not accept development evidence."""

    code = "attest.evidence.emulated"
    default_hint = "run on a real TEE, or set allow_emulated for development only"


class AppraisalRequestInvalid(AttestationError, InvalidInput):
    """The appraisal request itself is unusable (expected report_data longer than 64 bytes…)."""

    code = "attest.request.invalid"
    default_hint = "fix the caller: the expected binding must fit the TEE's report_data field"


class PolicyContraindicated(AttestationError):
    """Verified evidence whose appraisal (EAR status) the attestation policy does not accept."""

    code = "attest.policy.contraindicated"
    default_hint = "register the reference values of this enclave (measurement, initdata) or fix the enclave"


class PolicyInvalid(AttestationError, InvalidInput):
    """A Rego policy does not parse, uses an unknown function, or does not produce its rules."""

    code = "attest.policy.invalid"
    default_hint = "fix the policy text; it is checked when it is set, so the old policy stays in force"


class PolicyNotFound(AttestationError, ConfigurationError):
    """No policy with the requested id exists."""

    code = "attest.policy.not_found"
    default_hint = "set the policy first (admin API) or use the id 'default'"


class PolicyEvaluationFailed(AttestationError):
    """The Rego engine failed while evaluating a stored policy."""

    code = "attest.policy.evaluation"
    default_hint = "check the policy against this input with the policy tests; the engine's error is in the message"


class ReferenceValueInvalid(AttestationError, InvalidInput):
    """A reference value message is not Trustee's RVPS sample format, or a stored value is unreadable."""

    code = "attest.reference_value.invalid"
    default_hint = 'send {"version":"0.1.0","type":"sample","payload":base64({"name":[values]})}'


class EarTokenInvalid(AttestationError):
    """An EAR attestation token does not verify (signature, key, profile, expiry) or is malformed."""

    code = "attest.ear.invalid"
    default_hint = "attest again to obtain a fresh token signed by this attestation service"


class AttestationConfigError(ConfigurationError):
    """The attestation service cannot be set up (signing key unreadable, store not writable)."""

    code = "attest.config.invalid"
    default_hint = "check the attestation service's data directory (<data_dir>/keys/attest, <data_dir>/attest)"


__all__ = [
    "AppraisalRequestInvalid",
    "AttestationConfigError",
    "AttestationError",
    "AttestationKeyBindingInvalid",
    "CertificateChainInvalid",
    "CertificateExpired",
    "CertificateRevoked",
    "CollateralExpired",
    "CollateralInvalid",
    "CollateralMissing",
    "DebugNotAllowed",
    "EarTokenInvalid",
    "EmulatedNotAllowed",
    "EndorsementMissing",
    "EvidenceMalformed",
    "EvidenceSignatureInvalid",
    "EvidenceUnsupported",
    "InitDataMismatch",
    "MeasurementMismatch",
    "MigrationAgentNotAllowed",
    "PolicyContraindicated",
    "PolicyEvaluationFailed",
    "PolicyInvalid",
    "PolicyNotFound",
    "QeIdentityMismatch",
    "ReferenceValueInvalid",
    "ReportDataMismatch",
    "TcbLevelNotSupported",
    "TcbMismatch",
    "TcbTooLow",
    "UnknownTeeType",
    "VmplNotAllowed",
]
