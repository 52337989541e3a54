"""The ``attest`` stage: appraise the build runner's evidence of every ``built`` event.

Input ``built``; output ``attestation.verified`` (``purpose="build-runner"``) when the evidence
verifies, binds the provenance and the policy affirms it, else ``attestation.rejected`` naming
the failed check. A rejection is an *output*, not an exception: the runtime publishes outputs
only on success, and a raised error would become a generic ``failed`` event without the TEE,
evidence digest, policy and evidence an auditor needs. The sign stage consumes only
``attestation.verified`` (of purpose ``build-runner``), so nothing is signed after a rejection.

The binding: report_data must be the provenance digest zero-padded to 64 bytes (see
:func:`ccpipe.stages.build.provenance.report_data`). The digest is recomputed here from the statement
in the event (SHA-384 of its RFC 8785 bytes), so neither the statement nor the digest field can
be swapped without the hardware signature failing.

Reference values: the build runner is ccpipe's own ``enclave_runner`` package launched with an
empty configuration, so its launch measurement (SNP) / MRTD (TDX) are derived from this
installation and registered under the scope ``build-runner`` at start-up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Sequence

from ccpipe.evidence.measurement import launch_measurement_for, tdx_measurements_for
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import AttestationRejected, AttestationVerified, Built, EventType
from ccpipe.schemas.failure import FailureReason
from ccpipe.stages.attest.appraisal import STAGE, Appraisal, AppraisalRequest, AttestationService, evidence_digest
from ccpipe.stages.attest.errors import EvidenceMalformed, ReportDataMismatch
from ccpipe.stages.attest.rvps import ReferenceValue, sample_message

BUILD_RUNNER_SCOPE = "build-runner"
PURPOSE = "build-runner"


def register_build_runner_values(service: AttestationService) -> None:
    """Register this installation's build-runner measurements under :data:`BUILD_RUNNER_SCOPE`."""
    values: dict[str, list[ReferenceValue]] = {"snp_launch_measurement": [launch_measurement_for().hex()]}
    values.update({k: [v] for k, v in tdx_measurements_for().reference_values().items()})
    service.reference_values.register(sample_message(values), scope=BUILD_RUNNER_SCOPE)


def _rejected(built: Built, reason: FailureReason, appraisal: Appraisal | None = None) -> Output:
    """``attestation.rejected`` for ``built`` with ``reason`` and what the appraisal learnt."""
    ev = built.runner_evidence
    payload = AttestationRejected(
        tee=ev.tee,
        backend=ev.backend,
        evidence_digest=appraisal.evidence_digest if appraisal else None,
        reason=reason,
        evidence=ev.evidence,
        purpose=PURPOSE,
        policy_id=appraisal.policy_id if appraisal and appraisal.policy_digest else None,
        policy_digest=appraisal.policy_digest if appraisal and appraisal.policy_digest else None,
        ear_token=appraisal.ear_token if appraisal and appraisal.ear_token else None,
        trust_vector=appraisal.trust_vector if appraisal and appraisal.trust_vector else None,
        measurement=appraisal.measurement if appraisal else None,
        emulated=appraisal.emulated if appraisal and appraisal.claims else None,
        ear_status=appraisal.ear_status if appraisal and appraisal.ear_token else None,
        tcb=appraisal.claims.get("tcb") if appraisal and appraisal.claims else None,
    )
    return Output(EventType.ATTESTATION_REJECTED, payload)


def appraise_built(service: AttestationService, workload_id: str, built: Built) -> Output:
    """The output event for one ``built`` payload (pure apart from the service's stores)."""
    ev = built.runner_evidence
    try:
        raw = base64.b64decode(ev.evidence, validate=True)
    except (binascii.Error, ValueError) as exc:
        return _rejected(built, EvidenceMalformed(f"the build runner's evidence is not base64: {exc}").reason(STAGE))
    digest = hashlib.sha384(canonical_json(built.provenance)).hexdigest()
    if built.provenance_digest != f"sha384:{digest}":
        return _rejected(
            built,
            ReportDataMismatch(
                f"provenance_digest {built.provenance_digest} is not the SHA-384 of the provenance"
            ).reason(STAGE),
        )
    expected = bytes.fromhex(digest).ljust(64, b"\0")
    appraisal = service.appraise(
        AppraisalRequest(
            tee=ev.tee,
            evidence=raw,
            expected_report_data=expected,
            workload_id=workload_id,
            reference_scope=BUILD_RUNNER_SCOPE,
            backend=ev.backend,
        )
    )
    if appraisal.rejection is not None:
        return _rejected(built, appraisal.rejection, appraisal)
    return Output(
        EventType.ATTESTATION_VERIFIED,
        AttestationVerified(
            tee=ev.tee,
            backend=appraisal.backend,
            emulated=appraisal.emulated,
            evidence_digest=evidence_digest(raw),
            claims=appraisal.claims,
            ear_status=appraisal.ear_status,
            evidence=ev.evidence,
            purpose=PURPOSE,
            policy_id=appraisal.policy_id,
            policy_digest=appraisal.policy_digest,
            ear_token=appraisal.ear_token,
            trust_vector=appraisal.trust_vector,
            measurement=appraisal.measurement,
            tcb=appraisal.claims.get("tcb"),
            token_id=str(appraisal.ear_claims.get("jti")),
        ),
    )


def attest_stages(settings: Settings, endpoints: Endpoints) -> list[StageSpec]:
    """The ``attest`` stage on this installation's attestation service (shared data directory).

    Raises :class:`~ccpipe.stages.attest.errors.AttestationConfigError` if the service's key or
    stores under ``settings.data_dir`` cannot be used.
    """
    service = AttestationService.for_settings(settings)
    register_build_runner_values(service)

    async def handle(event: Event) -> Sequence[Output]:
        built = event.payload
        if not isinstance(built, Built):
            raise InvalidInput(f"the attest stage expects a built event, got {event.type}")
        # Verification is CPU-bound (signatures, Rego): keep the event loop responsive.
        return [await asyncio.to_thread(appraise_built, service, event.workload_id, built)]

    return [
        StageSpec(
            name="attest",
            input_type=EventType.BUILT,
            output_types=(EventType.ATTESTATION_VERIFIED, EventType.ATTESTATION_REJECTED),
            handler=handle,
            description="Appraise the build runner's TEE evidence (bound to the provenance).",
            hint="see the attestation.rejected event's reason for the failed check",
        )
    ]


__all__ = ["BUILD_RUNNER_SCOPE", "appraise_built", "attest_stages", "register_build_runner_values"]
