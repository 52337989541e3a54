"""Pydantic models of every response body of the audit HTTP API.

They are the single source of the OpenAPI schemas (:mod:`.openapi` generates
``components.schemas`` from them) and of the JSON the handlers write, so the document and
the wire cannot drift apart.

Imports ``pydantic`` and :mod:`ccpipe.pipeline.audit.query` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccpipe.pipeline.audit.query import IndexedEvent


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Links(_Body):
    """Where to fetch more about one event."""

    event: str | None = Field(description="The indexed event with its raw canonical bytes "
                                           "(null for a logged message without an event id).")
    proof: str = Field(description="Its inclusion proof against the latest checkpoint (by leaf index when the "
                                   "message has no event id).")


class EventSummary(_Body):
    """One logged event as the index holds it (without its bytes)."""

    seq: int = Field(description="JetStream stream sequence (1-based): the order of the trail; page with after_seq.")
    leaf_index: int = Field(description="Leaf index in the Merkle log (0-based).")
    event_id: str
    type: str = Field(description="Event type, or 'invalid' for a logged message that is not a valid event.")
    workload_id: str
    occurred_at: datetime
    component: str = Field(description="The component the event says emitted it (source.component).")
    signature: str = Field(
        description="Verdict on the event's Ed25519 signature: "
                    "valid, unsigned, unknown_key, bad_signature, wrong_signer, not_emitter (signed by a component "
                    "that may not emit this type), revoked_key (signed by a key the admin revoked, after it did)."
    )
    summary: str = Field(description="One line for a person.")
    fields: dict[str, str] = Field(description="Searchable fields: commit, image_digest, key_resource, node_id, tee…")
    links: Links

    @classmethod
    def of(cls, e: IndexedEvent) -> EventSummary:
        """The summary of an indexed event."""
        return cls(
            seq=e.seq, leaf_index=e.leaf_index, event_id=e.event_id, type=e.type, workload_id=e.workload_id,
            occurred_at=e.occurred_at, component=e.component, signature=e.signature, summary=e.summary,
            fields=dict(e.fields), links=_links(e),
        )


def _links(e: IndexedEvent) -> Links:
    # A logged message that is not a valid event may have no id; its leaf still has a proof.
    if not e.event_id:
        return Links(event=None, proof=f"/api/v1/leaves/{e.leaf_index}/proof")
    return Links(event=f"/api/v1/events/{e.event_id}", proof=f"/api/v1/events/{e.event_id}/proof")


class EventPage(_Body):
    """One page of events in stream order."""

    events: list[EventSummary]
    next_after_seq: int | None = Field(
        description="Pass as after_seq to get the next page; null when fewer than limit events came back "
                    "(nothing more matched)."
    )


class EventDetail(_Body):
    """One event: its index entry and the canonical bytes that are its Merkle leaf."""

    event: EventSummary
    raw: str = Field(description="Base64 of the canonical (RFC 8785) event bytes exactly as logged.")
    canonical: dict[str, Any] | None = Field(
        description="Those bytes decoded as JSON; null when the logged message is not JSON."
    )


StageName = Literal[
    "commit", "build", "provenance", "signature", "push", "placement", "attestation", "key_release", "run"
]
"""The stages of a chain of custody, in flow order."""


class StageStep(_Body):
    """One stage of a workload's chain of custody."""

    stage: StageName
    title: str
    status: Literal["done", "failed", "missing"] = Field(
        description="done: the stage's events are in the trail; failed: it was refused or failed; missing: no event."
    )
    verdict: str | None = Field(
        description="EAR status of an attestation, released/denied for a key, exit code of a run, or null."
    )
    digests: dict[str, str] = Field(description="Digests and identifiers the stage vouches for.")
    event_ids: list[str] = Field(description="The events of this stage, in stream order.")
    flagged: list[str] = Field(
        default_factory=list,
        description="Events of this stage whose component signature is not valid (unsigned, unknown key, "
                    "bad signature, wrong signer): logged as they were on the bus, but not vouched for.",
    )


class Journey(_Body):
    """Every event of one workload, and the chain of custody they make up."""

    workload_id: str
    stages: list[StageStep] = Field(description="commit → build → provenance → signature → push → placement → "
                                                "attestation → key release → run, always in this order.")
    events: list[EventSummary]


class KeyRecipients(_Body):
    """Who got a key: the key.released events of one KBS resource."""

    resource: str
    releases: list[EventSummary]


class ImageRuns(_Body):
    """Everything that ran an image: placements, launches, runs, exits and key releases."""

    image_digest: str
    workloads: list[str] = Field(description="Workloads built into this image, in order of first appearance.")
    events: list[EventSummary]


class WorkloadList(_Body):
    """Workload ids, most recently active first."""

    workloads: list[str]


WorkloadState = Literal["in_progress", "running", "succeeded", "failed", "denied"]
"""Where a workload stands, judged from its validly signed events (see :mod:`.overview`)."""


class WorkloadSummary(_Body):
    """One workload as the dashboard lists it."""

    workload_id: str
    state: WorkloadState = Field(
        description="in_progress: on its way (built, signed, placed…); running; succeeded: exited 0; failed: a stage "
                    "failed or it exited non-zero; denied: its attestation was rejected or its key denied.")
    last_event: str = Field(description="Type of its latest validly signed event.")
    tee: str | None = Field(description="TEE type it was placed on (or built for), if known.")
    node_id: str | None = Field(description="Node it was placed on, if known.")
    started_at: datetime = Field(description="occurred_at of its first event.")
    last_at: datetime = Field(description="occurred_at of its latest event.")
    duration_s: float = Field(description="From its first to its latest event, in seconds.")
    failure_reason: str | None = Field(description="Why it failed or was denied (the refusing event's summary).")
    events: int = Field(description="How many events of it the trail holds.")
    flagged: int = Field(description="How many of them are not validly signed by their component (not judged).")


class Overview(_Body):
    """The dashboard: recent workloads, denied key requests and rejected attestations, latest first."""

    workloads: list[WorkloadSummary] = Field(description="Recent workloads matching the filters, latest first.")
    denied_keys: list[EventSummary] = Field(description="Recent key.denied events matching tee, node and time.")
    rejected_attestations: list[EventSummary] = Field(
        description="Recent attestation.rejected events matching tee, node and time.")
    scanned: int = Field(description="How many of the most recently active workloads were looked at (the filters "
                                     "apply to these).")


class ProofDocument(_Body):
    """Everything a third party needs to check, without ccpipe, that an event is in the log.

    Leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖ right) (RFC 6962);
    folding ``inclusion_path`` from the leaf hash gives the root of the checkpoint, whose size
    equals ``tree_size`` and which ``log_public_key`` signed.
    """

    event_id: str | None = Field(description="The event's id (null for a logged message without one).")
    leaf: str = Field(description="Base64 of the canonical event bytes that were logged.")
    leaf_index: int
    tree_size: int
    inclusion_path: list[str] = Field(description="Lower-case hex SHA-256 hashes, bottom of the tree first.")
    checkpoint: str = Field(description="C2SP signed note: origin, size, base64 root, blank line, signature lines.")
    log_public_key: str = Field(description="C2SP note verifier key: name+hexkeyhash+base64(0x01 ‖ Ed25519 key).")


class ConsistencyProof(_Body):
    """RFC 6962 consistency proof between two tree sizes, with the checkpoints signed at them."""

    from_size: int
    to_size: int
    proof: list[str] = Field(description="Lower-case hex SHA-256 hashes (empty when the sizes are equal).")
    from_checkpoint: str | None = Field(description="The signed checkpoint of size from_size, if the log signed one.")
    to_checkpoint: str | None = Field(description="The signed checkpoint of size to_size, if the log signed one.")
    log_public_key: str


class ErrorDetail(_Body):
    """What was wrong, with a stable code."""

    code: str = Field(description="Stable dotted code, e.g. audit.api.not_found.")
    message: str
    hint: str


class ErrorBody(_Body):
    """Every 4xx/5xx response."""

    error: ErrorDetail


class ServiceStatus(_Body):
    """``/readyz``: what the audit service (the log's writer) last reported."""

    state: Literal["starting", "leading", "standby", "degraded", "refused"] = Field(
        description="leading: it logs every event (ready); standby: another process writes; degraded: it "
                    "retries a failure; refused: its store does not match the stream.")
    reason: str = Field(description="Why it is not leading, in one sentence (empty when it is).")
    holder: str = Field(description="The process that reported (host:pid:tag).")
    logged_seq: int = Field(description="Stream sequence of the last logged event.")
    stream_last_seq: int | None = Field(description="The stream's last sequence when last asked (null: unknown).")
    lag: int | None = Field(description="Events on the stream not logged yet (null: unknown).")
    updated: float = Field(description="Unix time of the report.")


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    EventPage, EventDetail, Journey, KeyRecipients, ImageRuns, WorkloadList, Overview, ProofDocument,
    ConsistencyProof, ServiceStatus, ErrorBody,
)
"""Every top-level response model (their schemas are the OpenAPI components)."""
