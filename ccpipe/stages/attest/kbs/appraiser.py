"""The seam between the KBS and the attestation service: evidence in, appraisal out.

The KBS needs one call: appraise this evidence for this binding (report_data, initdata
digest) and this workload, and say whether it is acceptable, with what EAR status and why not.
:class:`~ccpipe.stages.attest.kbs.attestation.ServiceAppraiser` implements it over the attestation
service; tests and benchmarks may put anything behind the same :class:`Appraiser` protocol.
Never raises for bad evidence: the outcome carries the rejection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccpipe.schemas.failure import FailureReason


@dataclass(frozen=True)
class AppraisalInput:
    """What the KBS asks the attestation service to appraise."""

    tee: str
    evidence: bytes
    expected_report_data: bytes
    expected_init_data_digest: bytes | None
    workload_id: str | None
    policy_id: str = "default"
    runtime_data: dict[str, Any] | None = None
    devices: dict[str, bytes] = field(default_factory=dict)
    """Devices' evidence by TEE type (RCAR ``additional_evidence``), bound to ``expected_device_report_data``."""
    expected_device_report_data: bytes | None = None


@dataclass(frozen=True)
class AppraisalOutcome:
    """What the attestation service answers (the fields every KBS event carries)."""

    ok: bool
    tee: str
    """The TEE type the verified evidence is (the verifier's claims), not the one the request named."""
    backend: str
    emulated: bool
    claims: dict[str, Any]
    ear_status: str
    trust_vector: dict[str, int]
    policy_id: str
    policy_digest: str
    evidence_digest: str
    measurement: str | None = None
    tcb: dict[str, Any] = field(default_factory=dict)
    rejection: FailureReason | None = None
    submods: dict[str, Any] = field(default_factory=dict)
    """The EAR submods of the appraisal (Trustee's token body), when the service made one."""


class Appraiser(Protocol):
    """Appraises evidence; never raises for bad evidence."""

    def appraise(self, req: AppraisalInput) -> AppraisalOutcome:
        """The appraisal of ``req`` (``ok`` False with ``rejection`` when refused).

        Every entry of ``req.devices`` must be verified too (or the appraisal refused): the KBS
        releases keys on the outcome as a whole.
        """
        ...


def evidence_digest(evidence: bytes) -> str:
    """``sha256:<hex>`` of the evidence bytes."""
    return "sha256:" + hashlib.sha256(evidence).hexdigest()
