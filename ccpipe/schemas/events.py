"""Payloads of every event type of the flow, one model per ``type``.

The envelope (``ccpipe.schemas.envelope``) picks the payload model from the event's ``type`` through
:data:`PAYLOAD_MODELS`, the only table of event types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ccpipe.schemas.digest import Digest
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import WorkloadSpec

HexBytes = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{2})*$")]
"""Lower-case hex of a byte string."""

CommitId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]
"""A full git object id (SHA-1 or SHA-256)."""


class EventType(StrEnum):
    """Every event type; the last token(s) of the subject ``ccpipe.evt.<workload_id>.<type>``."""

    SUBMITTED = "submitted"
    BUILT = "built"
    SIGNED = "signed"
    PUSHED = "pushed"
    SCHEDULED = "scheduled"
    SCHEDULING_PENDING = "scheduling.pending"
    ATTESTATION_CHALLENGED = "attestation.challenged"
    ATTESTATION_VERIFIED = "attestation.verified"
    ATTESTATION_REJECTED = "attestation.rejected"
    KEY_RELEASED = "key.released"
    KEY_DENIED = "key.denied"
    KBS_ADMIN_CHANGED = "kbs.admin.changed"
    KBS_REFUSED = "kbs.refused"
    NODE_ATTESTED = "node.attested"
    ENCLAVE_LAUNCHED = "enclave.launched"
    IMAGE_VERIFIED = "image.verified"
    IMAGE_UNPACKED = "image.unpacked"
    WORKLOAD_RUNNING = "workload.running"
    WORKLOAD_EXITED = "workload.exited"
    FAILED = "failed"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Evidence(_Payload):
    """TEE evidence as produced by a backend, with a description of that backend."""

    tee: TeeType = Field(description="TEE type of the evidence.")
    backend: str = Field(description="Where it came from: configfs-tsm, sev-guest, emulated, sample.")
    emulated: bool = Field(description="True when no hardware TEE produced it (development only).")
    evidence: str = Field(description="Base64 of the evidence in the format a Trustee-compatible verifier expects.")
    report_data: HexBytes = Field(description="The 64 bytes of report_data that were requested, as hex.")


class Submitted(_Payload):
    """A push (or ``ccpipe submit``) asked for a workload to be built and run."""

    repo: str = Field(description=(
        "Where the build reads the pushed commit: where components are enrolled, the stored source "
        "(ccpipe-artifact:CCPIPE_ARTIFACTS/<workload>/source/<sha256>@sha256:…, the commit's snapshot as a "
        "git pack sealed to the build stage); in a data directory without an admin key, the local path "
        "of the git repository."))
    ref: str = Field(description="The pushed ref, e.g. refs/heads/main.")
    old_commit: str = Field(description="Commit the ref pointed at before the push (all zeros if new).")
    new_commit: CommitId = Field(description="The pushed commit.")
    pusher: str = Field(description="Who pushed (user name as seen by the hook).")
    spec: WorkloadSpec = Field(description="The parsed ccpipe.toml at the pushed commit.")


class Built(_Payload):
    """The build stage produced an image, its provenance and the build runner's evidence."""

    image_digest: Digest = Field(description="Manifest digest of the built image.")
    layout: str = Field(description="Where the OCI layout of the image is: in the pipeline a digest-pinned "
                        "artifact, ccpipe-artifact:CCPIPE_ARTIFACTS/<name>@sha256:<digest of the stored object> "
                        "(sealed to the sign stage's enrolled keys); a local path only in library use on one host.")
    provenance: dict[str, Any] = Field(description="in-toto Statement v1 with an SLSA Provenance v1 predicate.")
    provenance_digest: Digest = Field(description="SHA-384 of the canonical provenance statement.")
    runner_evidence: Evidence = Field(description="Build-runner TEE evidence; report_data = provenance digest.")


class Signed(_Payload):
    """The image was encrypted, its key registered in the KBS and it was signed."""

    image_digest: Digest = Field(description="Manifest digest of the encrypted, signed image.")
    source_image_digest: Digest = Field(description="Digest of the plain image the build produced.")
    layout: str = Field(description="Where the OCI layout of the encrypted image and its signatures is: a "
                        "digest-pinned artifact (ccpipe-artifact:…@sha256:…), or a local path in library use.")
    key_resource: str = Field(description="KBS resource URI of the image key, kbs:///<repo>/<type>/<tag>.")
    signature_digest: Digest = Field(description="Digest of the cosign signature manifest.")
    initdata_digest: HexBytes = Field(description="Digest of the workload's initdata document.")
    initdata: str | None = Field(
        default=None, description="The initdata TOML itself (not secret): what the host hands the TEE at launch."
    )


class Pushed(_Payload):
    """The image, its signature and attestations are in the registry."""

    registry: str = Field(description="Registry host[:port].")
    repository: str = Field(description="Repository name in the registry.")
    image_digest: Digest = Field(description="Manifest digest that was pushed.")
    reference: str = Field(description="Full reference, docker://HOST/REPO@sha256:….")


class Scheduled(_Payload):
    """A node was chosen for the workload."""

    node_id: str = Field(description="The chosen node.")
    tee: TeeType = Field(description="TEE type of the node.")
    backend: str = Field(description="Evidence backend of the node.")
    reason: str = Field(default="", description="Why this node (capacity, TCB, spread).")
    attempt: int = Field(default=1, ge=1, description="Placement attempt: 1, then one more per reschedule.")
    replaces_node: str | None = Field(
        default=None, description="On a reschedule: the node the workload was placed on before, which went away."
    )


class SchedulingPending(_Payload):
    """No node fits the workload now; it waits and is placed when one appears (not a failure)."""

    reason: str = Field(description="Why no node fits, e.g. 'no snp node with free capacity'.")
    wanted: dict[str, Any] = Field(
        default_factory=dict,
        description="The requirement no node met: tee types, min_tcb, allow_emulated.",
    )
    attempt: int = Field(default=1, ge=1, description="Placement attempt this wait belongs to.")


class AttestationChallenged(_Payload):
    """The KBS opened an RCAR session and sent a challenge (``/auth``)."""

    tee: TeeType
    nonce: str = Field(description="The challenge nonce (base64) the evidence must bind.")
    session_id: str = Field(description="Id of the KBS session the challenge belongs to.")
    expires_at: datetime = Field(description="When the session expires (UTC).")
    hash_alg: str = Field(default="sha384", description="Hash binding nonce and TEE key into report_data.")
    node_id: str | None = Field(default=None, description="Requester (node) id, if it named itself.")


class AttestationVerified(_Payload):
    """The attestation service verified evidence."""

    tee: TeeType
    backend: str
    emulated: bool
    evidence_digest: Digest = Field(description="SHA-256 of the verified evidence bytes.")
    claims: dict[str, Any] = Field(description="Claims extracted from the evidence (measurement, report_data…).")
    ear_status: str = Field(description="EAR status: affirming, warning, contraindicated, none.")
    evidence: str | None = Field(default=None, description="Base64 of the evidence, kept for re-verification.")
    measurement: str | None = Field(default=None, description="Launch measurement (hex).")
    tcb: dict[str, Any] | None = Field(default=None, description="Platform TCB claims.")
    trust_vector: dict[str, int] | None = Field(default=None, description="EAR AR4SI trustworthiness vector.")
    policy_id: str | None = Field(default=None, description="Attestation policy id.")
    policy_digest: str | None = Field(default=None, description="Digest of the attestation policy text.")
    token_id: str | None = Field(default=None, description="jti of the attestation token issued.")
    node_id: str | None = Field(default=None, description="The runner node the request proved it came from "
                                                          "(its attested node key signed the session).")
    claimed_node_id: str | None = Field(
        default=None, description="The node the requester named, when no node proof bore it out (node_id is then "
                                  "the proven node, or None).")
    tee_pubkey_thumbprint: str | None = Field(default=None, description="RFC 7638 thumbprint of the TEE key.")
    purpose: str = Field(
        default="enclave", description="What was attested: enclave (a workload) or build-runner."
    )
    ear_token: str | None = Field(
        default=None, description="The signed EAR attestation result (JWT), if one was issued."
    )
    challenge_event_id: str | None = Field(default=None, description="The attestation.challenged it answered.")
    additional_evidence: str | None = Field(
        default=None, description="RCAR additional_evidence (devices' evidence as JSON text), if the guest sent any; "
        "bound into report_data and kept for re-verification.")


class AttestationRejected(_Payload):
    """The attestation service refused evidence."""

    tee: TeeType | None = None
    backend: str | None = None
    evidence_digest: Digest | None = None
    reason: FailureReason
    evidence: str | None = Field(default=None, description="Base64 of the evidence, kept for re-verification.")
    emulated: bool | None = None
    policy_id: str | None = Field(default=None, description="Attestation policy id.")
    policy_digest: str | None = Field(default=None, description="Digest of the attestation policy text.")
    node_id: str | None = Field(default=None, description="The runner node the request proved it came from "
                                                          "(its attested node key signed the session).")
    claimed_node_id: str | None = Field(
        default=None, description="The node the requester named, when no node proof bore it out (node_id is then "
                                  "the proven node, or None).")
    tee_pubkey_thumbprint: str | None = Field(default=None, description="RFC 7638 thumbprint of the TEE key.")
    purpose: str = Field(
        default="enclave", description="What was attested: enclave (a workload) or build-runner."
    )
    ear_token: str | None = Field(
        default=None, description="The signed EAR attestation result (JWT), if one was issued."
    )
    measurement: str | None = Field(default=None, description="Launch measurement (hex), if the evidence verified.")
    trust_vector: dict[str, int] | None = Field(default=None, description="EAR AR4SI vector, if the policy ran.")
    ear_status: str | None = Field(default=None, description="EAR status, if the policy ran.")
    tcb: dict[str, Any] | None = Field(default=None, description="Platform TCB claims, if the evidence verified.")
    challenge_event_id: str | None = Field(default=None, description="The attestation.challenged it answered.")
    additional_evidence: str | None = Field(
        default=None, description="RCAR additional_evidence (devices' evidence as JSON text), if the guest sent any; "
        "bound into report_data and kept for re-verification.")


class KbsAdminChanged(_Payload):
    """An administrator changed what the KBS releases or how it decides (stored before the change)."""

    action: str = Field(description="resource.set, resource.deleted, attestation-policy.set, "
                                    "resource-policy.set or reference-values.set.")
    target: str = Field(description="The resource path, policy id or reference value scope changed.")
    role: str | None = Field(default=None, description="Role claim of the admin token.")
    admin: str | None = Field(default=None, description="Subject (sub) of the admin token.")
    token_id: str | None = Field(default=None, description="jti of the admin token.")
    detail: dict[str, str] = Field(default_factory=dict, description="Policy digest, prefix, names, size…; "
                                   "never a resource's value.")


class KbsRequestsRefused(_Payload):
    """Requests the KBS refused from one client in one interval: one event with the count, not one each."""

    client: str = Field(description="Who sent them: the peer address the KBS saw.")
    kind: str = Field(description="admin (refused admin calls) or auth (/auth beyond the client's rate).")
    count: int = Field(ge=1, description="How many were refused.")
    reasons: dict[str, int] = Field(default_factory=dict, description="Refusal code → how many.")
    first_at: datetime = Field(description="The first refusal counted.")
    last_at: datetime = Field(description="The last refusal counted.")
    interval_s: float = Field(description="Length of the interval the events summarise.")


class KeyReleased(_Payload):
    """The KBS released a resource (a key) to an attested enclave."""

    resource: str = Field(description="KBS resource path <repo>/<type>/<tag>.")
    node_id: str | None = Field(default=None, description="The runner node the attestation proved (see "
                                                          "AttestationVerified.node_id); None if none.")
    claimed_node_id: str | None = Field(
        default=None, description="The node the requester named, when no node proof bore it out (node_id is then "
                                  "the proven node, or None).")
    attestation_event_id: str | None = Field(default=None, description="The attestation that justified it.")
    recipient_key_digest: Digest | None = Field(default=None, description="Digest of the enclave's ephemeral key.")
    token_id: str | None = Field(default=None, description="jti of the attestation token presented.")
    tee_pubkey_thumbprint: str | None = Field(default=None, description="RFC 7638 thumbprint of the TEE key.")
    policy_id: str | None = Field(default=None, description="Resource policy that allowed it.")
    rule: str | None = Field(default=None, description="The rule of the policy that allowed it.")


class KeyDenied(_Payload):
    """The KBS refused to release a resource."""

    resource: str
    node_id: str | None = Field(default=None, description="The runner node the attestation proved, if any.")
    claimed_node_id: str | None = Field(
        default=None, description="The node the requester named, when no node proof bore it out (node_id is then "
                                  "the proven node, or None).")
    reason: FailureReason
    token_id: str | None = Field(default=None, description="jti of the attestation token presented, if any.")
    tee_pubkey_thumbprint: str | None = Field(default=None, description="RFC 7638 thumbprint of the TEE key.")
    policy_id: str | None = Field(default=None, description="Resource policy that refused it.")
    rule: str | None = Field(default=None, description="The failed rule (audit only; not told to the requester).")
    attestation_event_id: str | None = Field(default=None, description="The attestation the request relied on.")


class EnclaveLaunched(_Payload):
    """A node started the enclave for the workload."""

    node_id: str
    tee: TeeType
    backend: str
    launch_measurement: HexBytes | None = None


class ImageVerified(_Payload):
    """Inside the enclave: the image pulled by digest carries a signature that verifies with the
    key the KBS released to this enclave; nothing was decrypted before this."""

    node_id: str
    image_digest: Digest = Field(description="Manifest digest of the (encrypted) image that was pulled.")
    reference: str = Field(description="Where it was pulled from, docker://HOST/REPO@sha256:….")
    signer_key_digest: Digest = Field(description="SHA-256 of the public key (PEM) the signature verified with.")
    signer_key_resource: str = Field(description="KBS resource the key came from.")


class ImageUnpacked(_Payload):
    """Inside the enclave: the layers were decrypted with the released key and safely unpacked."""

    node_id: str
    image_digest: Digest = Field(description="Manifest digest of the encrypted image.")
    plain_image_digest: Digest = Field(description="Manifest digest of the decrypted image.")
    layers: int
    entries: int
    bytes_written: int
    whiteouts: int = 0
    stripped_modes: int = Field(default=0, description="Entries whose setuid/setgid bits were removed.")


class LimitKind(StrEnum):
    """What holds one of the sandbox's resource limits."""

    CGROUP_V2 = "cgroup-v2"
    """A per-run cgroup on the unified hierarchy: the limit covers all the sandbox's processes together."""
    CGROUP_V1 = "cgroup-v1"
    """A per-run cgroup in the controller's v1 hierarchy: likewise for all its processes."""
    RLIMIT = "rlimit"
    """Only a resource limit of the processes (pids: of the sandbox's host uid; memory: per process)."""
    NONE = "none"


class SandboxLimits(_Payload):
    """Which mechanism held the sandbox's process count and memory."""

    pids: LimitKind = Field(description="What bounded the number of processes.")
    memory: LimitKind = Field(description="What bounded the memory.")


class WorkloadRunning(_Payload):
    """The workload is running in its enclave."""

    node_id: str
    image_digest: Digest
    limits: SandboxLimits | None = Field(
        default=None, description="Which limits applied to the sandbox (absent from runners that did not say)."
    )


class WorkloadExited(_Payload):
    """The workload ended."""

    node_id: str
    exit_code: int
    duration_s: float
    output_digest: Digest
    timed_out: bool = Field(default=False, description="True when the runner stopped it at its wall-clock limit.")
    timings_s: dict[str, float] | None = Field(
        default=None, description="Seconds per launch step: attest, key, pull, verify, decrypt, unpack, start, run."
    )


class NodeAttested(_Payload):
    """A runner node joined: the attestation service verified its TEE evidence, which binds its node key.

    The scheduler places work by these verified values, never by what the node's heartbeat says.
    Stored under the workload id ``ccpipe-nodes`` (:data:`ccpipe.schemas.nodes.NODES_WORKLOAD`).
    """

    node_id: str = Field(description="The node that attested (its inventory key).")
    node_key: str = Field(description="Its Ed25519 node key (base64url, 32 bytes); heartbeats are signed with it.")
    tee: TeeType = Field(description="TEE type of the verified evidence.")
    backend: str = Field(description="``hardware`` or ``emulated``, as the verifier found the evidence.")
    emulated: bool = Field(description="True when no hardware TEE signed the evidence.")
    tcb: dict[str, int] = Field(default_factory=dict, description="Verified TCB components (what min_tcb compares).")
    product: str = Field(description="Platform the verifier recognised.")
    measurement: str = Field(description="Launch measurement of the node's evidence (hex).")
    evidence_digest: Digest = Field(description="SHA-256 of the verified evidence bytes.")


class Failed(_Payload):
    """A step failed; nothing further happens for this workload unless it is resubmitted."""

    reason: FailureReason
    input_event_id: str | None = Field(default=None, description="The event whose processing failed.")
    input_type: str | None = Field(default=None, description="Type of that event.")
    attempts: int = Field(default=1, description="How many deliveries were tried.")


PAYLOAD_MODELS: dict[EventType, type[_Payload]] = {
    EventType.SUBMITTED: Submitted,
    EventType.BUILT: Built,
    EventType.SIGNED: Signed,
    EventType.PUSHED: Pushed,
    EventType.SCHEDULED: Scheduled,
    EventType.SCHEDULING_PENDING: SchedulingPending,
    EventType.ATTESTATION_CHALLENGED: AttestationChallenged,
    EventType.ATTESTATION_VERIFIED: AttestationVerified,
    EventType.ATTESTATION_REJECTED: AttestationRejected,
    EventType.KEY_RELEASED: KeyReleased,
    EventType.KEY_DENIED: KeyDenied,
    EventType.KBS_ADMIN_CHANGED: KbsAdminChanged,
    EventType.KBS_REFUSED: KbsRequestsRefused,
    EventType.NODE_ATTESTED: NodeAttested,
    EventType.ENCLAVE_LAUNCHED: EnclaveLaunched,
    EventType.IMAGE_VERIFIED: ImageVerified,
    EventType.IMAGE_UNPACKED: ImageUnpacked,
    EventType.WORKLOAD_RUNNING: WorkloadRunning,
    EventType.WORKLOAD_EXITED: WorkloadExited,
    EventType.FAILED: Failed,
}

Payload = Union[  # noqa: UP007 - a runtime union, for JSON Schema
    Submitted, Built, Signed, Pushed, Scheduled, SchedulingPending, AttestationChallenged, AttestationVerified,
    AttestationRejected, KeyReleased, KeyDenied, KbsAdminChanged, KbsRequestsRefused, NodeAttested, EnclaveLaunched,
    ImageVerified, ImageUnpacked, WorkloadRunning, WorkloadExited, Failed,
]
"""Any payload; which one is fixed by the envelope's ``type`` (see PAYLOAD_MODELS)."""
