"""The Prometheus metric families of a ccpipe process, in the process-wide default registry.

Names follow Prometheus' conventions (``_total`` is added to counters on exposition, durations
in seconds). Where Trustee's KBS exports a metric for the same fact its name is kept
(``kbs_attestation_*``), so a dashboard made for Trustee reads ccpipe's KBS too; what Trustee
has no name for is ``ccpipe_*``.

The KBS families are counted from the events the KBS publishes (:func:`observe_published`):
the events are the KBS's decisions, so the counters cannot drift from the audit trail, and the
KBS code needs no metric calls of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from ccpipe.schemas.envelope import Event
from ccpipe.schemas.events import AttestationRejected, AttestationVerified, EventType

STAGE_HANDLED = Counter(
    "ccpipe_stage_handled",
    "Deliveries a stage finished with, by outcome: ok (outputs stored), retried (nak'd for redelivery), "
    "failed (a failed event published), refused (an untrusted or replayed input).",
    ["stage", "outcome"],
)
STAGE_DURATION = Histogram(
    "ccpipe_stage_handler_duration_seconds",
    "Time from receiving a delivery to settling it (handler, in-process retries and publishing the outputs).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
EVENTS_PUBLISHED = Counter(
    "ccpipe_events_published", "Events this process stored in CCPIPE_EVENTS, by emitting component and type.",
    ["component", "type"],
)
KBS_ATTESTATION_REQUESTS = Counter(
    "kbs_attestation_requests", "Attestations the KBS decided (verified or rejected).",
)
KBS_ATTESTATION_SUCCESSES = Counter(
    "kbs_attestation_successes", "Attestations the KBS verified, by TEE type.", ["tee_type"],
)
KBS_ATTESTATION_FAILURES = Counter(
    "kbs_attestation_failures", "Attestations the KBS rejected, by TEE type (unknown when it could not tell).",
    ["tee_type"],
)
KBS_KEY_REQUESTS = Counter(
    "ccpipe_kbs_key_requests", "Resource (key) requests the KBS decided, by verdict: released or denied.",
    ["verdict"],
)
AUDIT_STREAM_SEQ = Gauge("ccpipe_audit_stream_last_seq", "Last sequence of CCPIPE_EVENTS as the audit log last saw it.")
AUDIT_INDEXED_SEQ = Gauge("ccpipe_audit_indexed_seq", "Last stream sequence the audit log has indexed.")
AUDIT_LAG_EVENTS = Gauge(
    "ccpipe_audit_ingest_lag_events", "Events stored in CCPIPE_EVENTS and not yet indexed by the audit log.",
)
AUDIT_LAG_SECONDS = Gauge(
    "ccpipe_audit_ingest_lag_seconds",
    "Age of the oldest event not yet indexed by the audit log (0 when it is caught up).",
)
NATS_RECONNECTS = Counter("ccpipe_nats_reconnects", "Reconnections to NATS, by connection name.", ["connection"])

_TEE_UNKNOWN = "unknown"


def observe_published(event: Event) -> None:
    """Count one stored event, and what it says about the KBS's decisions when the KBS emitted it."""
    component = event.source.component
    EVENTS_PUBLISHED.labels(component, event.type.value).inc()
    if component != "kbs":
        return
    payload = event.payload
    if event.type is EventType.ATTESTATION_VERIFIED and isinstance(payload, AttestationVerified):
        KBS_ATTESTATION_REQUESTS.inc()
        KBS_ATTESTATION_SUCCESSES.labels(payload.tee.value).inc()
    elif event.type is EventType.ATTESTATION_REJECTED and isinstance(payload, AttestationRejected):
        KBS_ATTESTATION_REQUESTS.inc()
        KBS_ATTESTATION_FAILURES.labels(payload.tee.value if payload.tee else _TEE_UNKNOWN).inc()
    elif event.type is EventType.KEY_RELEASED:
        KBS_KEY_REQUESTS.labels("released").inc()
    elif event.type is EventType.KEY_DENIED:
        KBS_KEY_REQUESTS.labels("denied").inc()


def set_audit_lag(*, stream_last_seq: int, indexed_seq: int, oldest_unindexed_age_s: float | None) -> None:
    """Record the audit log's position against the stream; ``oldest_unindexed_age_s`` is 0 when it is
    caught up, None when the age could not be measured (the gauge keeps its last value)."""
    AUDIT_STREAM_SEQ.set(stream_last_seq)
    AUDIT_INDEXED_SEQ.set(indexed_seq)
    AUDIT_LAG_EVENTS.set(max(0, stream_last_seq - indexed_seq))
    if oldest_unindexed_age_s is not None:
        AUDIT_LAG_SECONDS.set(max(0.0, oldest_unindexed_age_s))


def count_reconnects(connection: str) -> Callable[[], Awaitable[None]]:
    """A nats-py ``reconnected_cb`` that counts the reconnections of ``connection``."""
    counter = NATS_RECONNECTS.labels(connection)

    async def reconnected() -> None:
        counter.inc()

    return reconnected
