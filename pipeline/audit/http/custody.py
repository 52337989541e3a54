"""A workload's events → its chain of custody, one step per stage, in flow order. Pure.

The stages are those of DESIGN.md's flow: commit → build → provenance → signature → push →
placement → attestation → key release → run. Each step lists its events, the digests and
identifiers they vouch for, and a verdict where the stage has one (EAR status, key
released/denied, exit code). A ``failed`` event marks the first stage that has no event as
failed, since the flow stops there. Events a workload may repeat (a retried attestation, a
second key release) all belong to the step; its verdict is the last one's. Events whose
component signature is not valid are listed as ``flagged``: the trail keeps them, but no
component vouches for them.

Imports :mod:`pipeline.audit.query` and :mod:`.models` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.audit.http.models import StageName, StageStep
from pipeline.audit.query import IndexedEvent


@dataclass(frozen=True)
class _Stage:
    name: StageName
    title: str
    types: tuple[str, ...]
    shows: tuple[str, ...]
    """Fields of the events shown as the stage's digests and identifiers."""
    refused: tuple[str, ...] = ()
    """Types that mean the stage refused the workload."""


STAGES: tuple[_Stage, ...] = (
    _Stage("commit", "Commit", ("submitted",), ("commit", "ref", "repo", "pusher")),
    _Stage("build", "Build", ("built",), ("image_digest",)),
    _Stage("provenance", "Provenance", ("built",), ("provenance_digest", "tee", "backend")),
    _Stage("signature", "Signature", ("signed",),
           ("image_digest", "source_image_digest", "signature_digest", "key_resource")),
    _Stage("push", "Push", ("pushed",), ("image_digest", "reference")),
    _Stage("placement", "Placement", ("scheduled",), ("node_id", "tee", "backend")),
    _Stage("attestation", "Attestation", ("attestation.verified", "attestation.rejected"),
           ("tee", "backend", "evidence_digest", "emulated"), refused=("attestation.rejected",)),
    _Stage("key_release", "Key release", ("key.released", "key.denied"),
           ("key_resource", "node_id", "recipient_key_digest", "attestation_event_id"), refused=("key.denied",)),
    _Stage("run", "Run", ("enclave.launched", "workload.running", "workload.exited"),
           ("node_id", "image_digest", "exit_code", "output_digest")),
)
"""Every stage of the chain of custody, in flow order."""

GOOD_EAR = frozenset({"affirming", "warning"})
"""EAR statuses under which the KBS may release a key; any other means the attestation failed."""


@dataclass
class _Acc:
    events: list[IndexedEvent] = field(default_factory=list)


def _verdict(stage: _Stage, last: IndexedEvent) -> str | None:
    if stage.name == "run":
        code = last.fields.get("exit_code")
        return f"exit {code}" if code is not None else last.type.removeprefix("workload.").removeprefix("enclave.")
    if stage.name in ("attestation", "key_release"):
        return last.fields.get("verdict")
    return None


def _failed(stage: _Stage, last: IndexedEvent) -> bool:
    if last.type in stage.refused:
        return True
    if stage.name == "attestation":
        return last.fields.get("verdict") not in GOOD_EAR
    if stage.name == "run" and last.type == "workload.exited":
        return last.fields.get("exit_code") != "0"
    return False


def chain_of_custody(events: Sequence[IndexedEvent]) -> list[StageStep]:
    """The chain of custody of one workload's ``events`` (in stream order): one step per
    entry of :data:`STAGES`, in that order, each ``done``, ``failed`` or ``missing``."""
    accs = {s.name: _Acc() for s in STAGES}
    failures = [e for e in events if e.type == "failed"]
    for e in events:
        for s in STAGES:
            if e.type in s.types:
                accs[s.name].events.append(e)
    steps: list[StageStep] = []
    failure_placed = False
    for s in STAGES:
        evs = accs[s.name].events
        if not evs:
            # The flow stops at the first stage without an event; a failed event belongs there.
            if failures and not failure_placed:
                failure_placed = True
                last_failure = failures[-1]
                steps.append(StageStep(
                    stage=s.name, title=s.title, status="failed", verdict=last_failure.fields.get("reason", "failed"),
                    digests={}, event_ids=[f.event_id for f in failures],
                    flagged=[f.event_id for f in failures if f.signature != "valid"],
                ))
            else:
                steps.append(StageStep(stage=s.name, title=s.title, status="missing", verdict=None,
                                       digests={}, event_ids=[]))
            continue
        digests: dict[str, str] = {}
        for e in evs:
            digests.update({k: v for k, v in e.fields.items() if k in s.shows})
        last = evs[-1]
        steps.append(StageStep(
            stage=s.name, title=s.title, status="failed" if _failed(s, last) else "done",
            verdict=_verdict(s, last), digests=digests, event_ids=[e.event_id for e in evs],
            flagged=[e.event_id for e in evs if e.signature != "valid"],
        ))
    return steps
