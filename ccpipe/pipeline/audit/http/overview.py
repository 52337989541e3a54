"""The dashboard's view of the trail: each recent workload's state, place and duration. Pure.

A workload's state is judged from its validly signed events only (as ``ccpipe status`` does:
nothing acted on the others), walking them in stream order: ``failed`` once any stage failed
or the workload exited non-zero (it stays failed); ``denied`` after an attestation was rejected
or a key denied, unless a later release or run followed (a retried attestation); ``running``
after ``workload.running``; ``succeeded`` after a zero exit; ``in_progress`` otherwise.

Imports :mod:`ccpipe.pipeline.audit.query` and :mod:`.models` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ccpipe.pipeline.audit.http.models import WorkloadState, WorkloadSummary
from ccpipe.pipeline.audit.query import IndexedEvent

STATES: tuple[WorkloadState, ...] = ("in_progress", "running", "succeeded", "failed", "denied")
"""Every workload state, in the order the page offers them."""
REFUSALS = ("attestation.rejected", "key.denied")
"""Event types that deny a workload its key."""
SCAN = 500
"""How many of the most recently active workloads one dashboard request looks at, at most: the
filters apply to these, so the request's cost stays bounded however large the trail grows."""


@dataclass(frozen=True)
class OverviewFilter:
    """Which workloads and refusals the dashboard lists; every field set narrows it."""

    state: WorkloadState | None = None
    tee: str | None = None
    node_id: str | None = None
    since: datetime | None = None
    """Workloads active at or after this time; refusals that occurred then or later."""
    until: datetime | None = None
    """Workloads that started before this time; refusals that occurred before it."""
    limit: int = 50


def _step(state: WorkloadState, e: IndexedEvent) -> WorkloadState:
    if state == "failed" or e.type == "failed":
        return "failed"
    if e.type in REFUSALS:
        return "denied"
    if e.type == "workload.exited":
        return "succeeded" if e.fields.get("exit_code") == "0" else "failed"
    if e.type == "workload.running":
        return "running"
    if state == "denied" and e.type not in ("key.released", "enclave.launched"):
        return "denied"  # a refusal stands until a release or a launch shows a retry got through
    return "in_progress"


def summarize(workload_id: str, events: Sequence[IndexedEvent]) -> WorkloadSummary | None:
    """The dashboard line of one workload from its events (stream order); ``None`` if it has none."""
    if not events:
        return None
    trusted = [e for e in events if e.signature == "valid"]
    state: WorkloadState = "in_progress"
    reason: str | None = None
    tee = node = None
    for e in trusted:
        before, state = state, _step(state, e)
        if state not in ("failed", "denied"):
            reason = None
        elif state != before:
            reason = e.summary  # the event that failed or refused it says why
        tee = e.fields.get("tee", tee)
        node = e.fields.get("node_id", node)
    first, last = events[0], events[-1]
    return WorkloadSummary(
        workload_id=workload_id, state=state, last_event=trusted[-1].type if trusted else "none",
        tee=tee, node_id=node, started_at=first.occurred_at, last_at=last.occurred_at,
        duration_s=round(max(0.0, (last.occurred_at - first.occurred_at).total_seconds()), 3),
        failure_reason=reason, events=len(events), flagged=len(events) - len(trusted),
    )


def matches(s: WorkloadSummary, f: OverviewFilter) -> bool:
    """Whether the workload ``s`` passes every filter of ``f``."""
    return ((f.state is None or s.state == f.state) and (f.tee is None or s.tee == f.tee)
            and (f.node_id is None or s.node_id == f.node_id)
            and (f.since is None or s.last_at >= f.since) and (f.until is None or s.started_at < f.until))
