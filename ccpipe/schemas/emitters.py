"""Which component may emit which event type: part of the contract.

The table is the one home of that rule. The bus derives each component's NATS publish
permissions from it (``ccpipe.pipeline.nats_auth``), and consumers that check an event's
signature (issue 19, item 7) ask it which components may have signed an event of a type.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from ccpipe.schemas.events import EventType


class Component(StrEnum):
    """A part of the pipeline that emits events (and holds its own bus identity)."""

    SUBMIT = "submit"
    """The git hook and ``ccpipe submit``."""
    BUILD = "build"
    ATTEST = "attest"
    SIGN = "sign"
    PUSH = "push"
    SCHEDULE = "schedule"
    """The ``schedule`` stage and the scheduler service beside it."""
    KBS = "kbs"
    RUNNER = "runner"
    """An enclave runner node (each node has its own identity, ``runner-<node id>``)."""
    AUDIT = "audit"
    """The audit log; it emits no event into the trail (its checkpoints go to their own stream)."""


_STAGES_THAT_FAIL = frozenset({Component.SUBMIT, Component.BUILD, Component.ATTEST, Component.SIGN, Component.PUSH,
                               Component.SCHEDULE, Component.RUNNER})

EMITTERS: Mapping[EventType, frozenset[Component]] = MappingProxyType({
    EventType.SUBMITTED: frozenset({Component.SUBMIT}),
    EventType.BUILT: frozenset({Component.BUILD}),
    # the attest stage appraises the build runner; the KBS appraises enclaves
    EventType.ATTESTATION_VERIFIED: frozenset({Component.ATTEST, Component.KBS}),
    EventType.ATTESTATION_REJECTED: frozenset({Component.ATTEST, Component.KBS}),
    EventType.ATTESTATION_CHALLENGED: frozenset({Component.KBS}),
    EventType.SIGNED: frozenset({Component.SIGN}),
    EventType.PUSHED: frozenset({Component.PUSH}),
    EventType.SCHEDULED: frozenset({Component.SCHEDULE}),
    EventType.SCHEDULING_PENDING: frozenset({Component.SCHEDULE}),
    EventType.KEY_RELEASED: frozenset({Component.KBS}),
    EventType.KEY_DENIED: frozenset({Component.KBS}),
    EventType.KBS_ADMIN_CHANGED: frozenset({Component.KBS}),
    EventType.KBS_REFUSED: frozenset({Component.KBS}),
    # the KBS process hosts the attestation service that admits runner nodes
    EventType.NODE_ATTESTED: frozenset({Component.KBS}),
    EventType.ENCLAVE_LAUNCHED: frozenset({Component.RUNNER}),
    EventType.IMAGE_VERIFIED: frozenset({Component.RUNNER}),
    EventType.IMAGE_UNPACKED: frozenset({Component.RUNNER}),
    EventType.WORKLOAD_RUNNING: frozenset({Component.RUNNER}),
    EventType.WORKLOAD_EXITED: frozenset({Component.RUNNER}),
    # every stage reports its own failure; the KBS answers refusals with key.denied instead
    EventType.FAILED: _STAGES_THAT_FAIL,
})
"""Event type → the components allowed to emit it."""


def emitted_by(component: Component) -> frozenset[EventType]:
    """The event types ``component`` may emit."""
    return frozenset(etype for etype, who in EMITTERS.items() if component in who)


def may_emit(component: Component, event_type: EventType) -> bool:
    """True when ``component`` is allowed to emit ``event_type``."""
    return component in EMITTERS.get(event_type, frozenset())
