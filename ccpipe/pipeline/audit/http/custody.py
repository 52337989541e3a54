"""A workload's events → its chain of custody, one step per stage, in flow order. Pure.

The stages are those of DESIGN.md's flow: commit → build → provenance → signature → push →
placement → attestation → key release → run. Each step lists its events, the digests and
identifiers they vouch for, and a verdict where the stage has one (EAR status, key
released/denied, exit code). A ``failed`` event marks the first stage that has no event as
failed, since the flow stops there. Events a workload may repeat (a retried attestation, a
second key release) all belong to the step; its verdict is the last one's. An attestation
logged before the workload was placed is the build runner's: it backs the provenance (the
sign stage signs only an image whose build-runner evidence verified); after, it is the
enclave's. Events whose
component signature is not valid are listed as ``flagged``: the trail keeps them, but no
component vouches for them.

Imports :mod:`ccpipe.pipeline.audit.query` and :mod:`.models` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ccpipe.pipeline.audit.http.models import StageName, StageStep
from ccpipe.pipeline.audit.query import IndexedEvent


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
    _Stage("provenance", "Provenance", ("built",), ("provenance_digest", "tee", "backend", "evidence_digest"),
           refused=("attestation.rejected",)),
    _Stage("signature", "Signature", ("signed",),
           ("image_digest", "source_image_digest", "signature_digest", "key_resource")),
    _Stage("push", "Push", ("pushed",), ("image_digest", "reference")),
    _Stage("placement", "Placement", ("scheduled",), ("node_id", "tee", "backend")),
    _Stage("attestation", "Attestation", ("attestation.verified", "attestation.rejected"),
           ("tee", "backend", "evidence_digest", "emulated"), refused=("attestation.rejected",)),
    _Stage("key_release", "Key release", ("key.released", "key.denied"),
           ("key_resource", "node_id", "recipient_key_digest", "attestation_event_id"), refused=("key.denied",)),
    _Stage("run", "Run", ("enclave.launched", "image.verified", "image.unpacked", "workload.running",
                          "workload.exited"),
           ("node_id", "image_digest", "signer_key_digest", "plain_image_digest", "exit_code", "output_digest")),
)
"""Every stage of the chain of custody, in flow order."""

GOOD_EAR = frozenset({"affirming", "warning"})
"""EAR statuses under which the KBS may release a key; any other means the attestation failed."""


ATTESTATION_TYPES = ("attestation.verified", "attestation.rejected")
CHALLENGE_TYPE = "attestation.challenged"
"""A KBS challenge belongs to the attestation that answers it; alone, it is no verdict."""
PLACED_TYPES = ("scheduled", "enclave.launched", "workload.running", "workload.exited")
"""Once one of these is logged, an attestation is the enclave's; before, it is the build runner's."""


def _verdict(stage: _Stage, evs: Sequence[IndexedEvent]) -> str | None:
    last = evs[-1]
    if stage.name == "run":
        code = last.fields.get("exit_code")
        return f"exit {code}" if code is not None else last.type.removeprefix("workload.").removeprefix("enclave.")
    if stage.name == "key_release":
        return last.fields.get("verdict")
    if stage.name in ("attestation", "provenance"):
        attested = [e for e in evs if e.type in ATTESTATION_TYPES]
        return attested[-1].fields.get("verdict") if attested else None
    return None


def _failed(stage: _Stage, evs: Sequence[IndexedEvent]) -> bool:
    last = evs[-1]
    if stage.name in ("attestation", "provenance"):
        # The provenance stands on the build runner's attestation, when there is one.
        attested = [e for e in evs if e.type in ATTESTATION_TYPES]
        return bool(attested) and (attested[-1].type in stage.refused
                                   or attested[-1].fields.get("verdict") not in GOOD_EAR)
    if last.type in stage.refused:
        return True
    if stage.name == "run" and last.type == "workload.exited":
        return last.fields.get("exit_code") != "0"
    return False


def _assign(events: Sequence[IndexedEvent]) -> dict[str, list[IndexedEvent]]:
    by_stage: dict[str, list[IndexedEvent]] = {s.name: [] for s in STAGES}
    placed = False
    for e in events:
        placed = placed or e.type in PLACED_TYPES
        if e.type in ATTESTATION_TYPES or e.type == CHALLENGE_TYPE:
            # The build runner's evidence backs the provenance; the enclave's, the key release.
            by_stage["attestation" if placed else "provenance"].append(e)
            continue
        for s in STAGES:
            if e.type in s.types:
                by_stage[s.name].append(e)
    return by_stage


def chain_of_custody(events: Sequence[IndexedEvent]) -> list[StageStep]:
    """The chain of custody of one workload's ``events`` (in stream order): one step per
    entry of :data:`STAGES`, in that order, each ``done``, ``failed`` or ``missing``."""
    by_stage = _assign(events)
    failures = [e for e in events if e.type == "failed"]
    steps: list[StageStep] = []
    failure_placed = False
    for s in STAGES:
        evs = by_stage[s.name]
        if evs and all(e.type == CHALLENGE_TYPE for e in evs):
            # Challenged but never answered: no attestation happened (yet).
            steps.append(StageStep(stage=s.name, title=s.title, status="missing", verdict=None, digests={},
                                   event_ids=[e.event_id for e in evs],
                                   flagged=[e.event_id for e in evs if e.signature != "valid"]))
            continue
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
        digests: dict[str, list[str]] = {}
        for e in evs:
            for k, v in e.fields.items():
                # Two key releases (image key, signature key) each name their own resource: keep both.
                if k in s.shows and v not in digests.setdefault(k, []):
                    digests[k].append(v)
        steps.append(StageStep(
            stage=s.name, title=s.title, status="failed" if _failed(s, evs) else "done",
            verdict=_verdict(s, evs), digests={k: ", ".join(v) for k, v in digests.items()},
            event_ids=[e.event_id for e in evs],
            flagged=[e.event_id for e in evs if e.signature != "valid"],
        ))
    return steps
