"""Scheduler, pure core: choose a node for a workload, and know what is placed where.

* :func:`choose_node` picks, among the announced nodes, one whose TEE satisfies the
  workload's requirement (type, minimum TCB, emulated allowed or not) and which has a free
  slot; among those, the least loaded (fewest active placements per slot), so replicas of
  many workloads spread over the nodes; among equally loaded ones, the one given the fewest
  workloads so far (per slot), so short workloads that end before the next placement take
  turns instead of all going to the first node by name. When none fits it returns a
  :class:`NoFit` with a reason a person can act on.
* :class:`PlacementView` folds the trail's events (``submitted``, ``scheduled``,
  ``scheduling.pending``, ``workload.running``, ``workload.exited``, ``failed``…) into the
  current placement of every workload and the load of every node.
* :func:`due_actions` says what the scheduler service must do now: place workloads that wait,
  and reschedule workloads whose node went away before they started running.

No NATS here; imports ``schemas`` and :mod:`ccpipe.stages.deploy.inventory`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ccpipe.schemas.envelope import Event
from ccpipe.schemas.events import EventType, Scheduled, SchedulingPending, Submitted
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.deploy.inventory import NodeAnnouncement, unfit_reason, wanted_summary


@dataclass(frozen=True)
class Placement:
    """The chosen node and why."""

    node: NodeAnnouncement
    reason: str


@dataclass(frozen=True)
class NoFit:
    """No node fits now: why, and what was wanted."""

    reason: str
    wanted: dict[str, object]


def choose_node(
    nodes: Iterable[NodeAnnouncement],
    requirements: TeeRequirements,
    *,
    allow_emulated: bool,
    load: Mapping[str, int] | None = None,
    placed: Mapping[str, int] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Placement | NoFit:
    """The least-loaded node that fits ``requirements``, or why there is none.

    ``load`` counts the workloads already placed on each node (placed or running, not ended);
    a node's usable slots are the smaller of what it announces free and ``total - load``, so
    placements the node has not counted yet are not given away twice. ``placed`` counts the
    workloads each node was ever given (ended ones included): among equally loaded nodes the
    one given the fewest per slot wins, a round-robin that every replica reading the same trail
    agrees on. ``exclude`` names nodes not to use (the one that just went away). Remaining ties
    go to the node with more free slots, then to the node id, so the choice is deterministic.
    """
    load, placed = load or {}, placed or {}
    fitting: list[tuple[float, float, int, str, NodeAnnouncement]] = []
    refused: dict[str, str] = {}
    for node in nodes:
        if node.node_id in exclude:
            continue
        used = load.get(node.node_id, 0)
        free = min(node.capacity.free, node.capacity.total - used)
        problem = unfit_reason(node, requirements, allow_emulated=allow_emulated, free=free)
        if problem is not None:
            refused[node.node_id] = problem
            continue
        slots = max(node.capacity.total, 1)
        fitting.append((used / slots, placed.get(node.node_id, 0) / slots, -free, node.node_id, node))
    if fitting:
        _, _, neg_free, _, best = min(fitting)
        used = load.get(best.node_id, 0)
        kind = f"{best.tee.value}{' (emulated)' if best.emulated else ''}"
        reason = (
            f"{kind} node {best.node_id}: least loaded of {len(fitting)} fitting node(s) "
            f"({used}/{best.capacity.total} slots in use, {-neg_free} free)"
        )
        if requirements.min_tcb:
            reason += "; TCB meets " + ", ".join(f"{k} >= {v}" for k, v in sorted(requirements.min_tcb.items()))
        return Placement(best, reason)
    return NoFit(_no_fit_reason(refused, requirements), wanted_summary(requirements, allow_emulated=allow_emulated))


def _no_fit_reason(refused: Mapping[str, str], requirements: TeeRequirements) -> str:
    wanted = "/".join(t.value for t in requirements.types)
    if not refused:
        return f"no nodes are announced; waiting for a {wanted} node"
    counts = Counter(refused.values())
    # reasons about nodes of a wanted TEE (TCB, capacity, emulation) say more than "wrong TEE": first
    ranked = sorted(counts.items(), key=lambda item: (item[0].startswith("TEE "), -item[1], item[0]))
    parts = [f"{n} node(s): {why}" if n > 1 else f"{_first(refused, why)}: {why}" for why, n in ranked[:3]]
    more = f" (and {len(counts) - 3} more reasons)" if len(counts) > 3 else ""
    return f"no {wanted} node fits: " + "; ".join(parts) + more


def _first(refused: Mapping[str, str], why: str) -> str:
    return next(node for node, reason in sorted(refused.items()) if reason == why)


def decision_payload(
    decision: Placement | NoFit, *, attempt: int, replaces_node: str | None = None
) -> tuple[EventType, Scheduled | SchedulingPending]:
    """The event a scheduling decision becomes."""
    if isinstance(decision, Placement):
        node = decision.node
        return EventType.SCHEDULED, Scheduled(
            node_id=node.node_id, tee=node.tee, backend=node.backend, reason=decision.reason,
            attempt=attempt, replaces_node=replaces_node,
        )
    return EventType.SCHEDULING_PENDING, SchedulingPending(
        reason=decision.reason, wanted=decision.wanted, attempt=attempt
    )


# --- what is placed where -------------------------------------------------------------------

_ACTIVE = frozenset({"scheduled", "running"})


@dataclass
class WorkloadPlacement:
    """What the trail says about one workload's placement."""

    workload_id: str
    requirements: TeeRequirements | None = None
    phase: str = "submitted"
    """submitted, pushed, pending, scheduled, running (an ended workload leaves the view's ``workloads``)."""
    node_id: str | None = None
    attempt: int = 0
    decision_event_id: str | None = None
    """The latest ``scheduled`` / ``scheduling.pending`` event: what the next decision derives its id from."""
    pushed_event_id: str | None = None


@dataclass
class PlacementView:
    """Placements and node load, folded from events in stream order (see :meth:`apply`)."""

    workloads: dict[str, WorkloadPlacement] = field(default_factory=dict)
    """Workloads that have not ended."""
    ended: dict[str, str | None] = field(default_factory=dict)
    """Ended workloads → their last node: only what :meth:`placed` and :func:`gone_from` need, so the
    view of a long run holds a few bytes per ended workload, not its placement and requirements."""
    last_seq: int = 0

    def _get(self, workload_id: str) -> WorkloadPlacement:
        wp = self.workloads.get(workload_id)
        if wp is None:
            wp = self.workloads[workload_id] = WorkloadPlacement(workload_id)
        return wp

    def apply(self, event: Event, seq: int = 0) -> None:
        """Fold one event in; events of other types, and any event of an ended workload, are ignored."""
        self.last_seq = max(self.last_seq, seq)
        if event.workload_id in self.ended:
            return
        p = event.payload
        if event.type == EventType.SUBMITTED and isinstance(p, Submitted):
            self._get(event.workload_id).requirements = p.spec.tee
            return
        if event.type not in _TRACKED:
            return
        wp = self._get(event.workload_id)
        if event.type == EventType.PUSHED:
            wp.pushed_event_id = event.id
            if wp.phase == "submitted":
                wp.phase = "pushed"
        elif isinstance(p, Scheduled):
            wp.phase, wp.node_id, wp.attempt, wp.decision_event_id = "scheduled", p.node_id, p.attempt, event.id
        elif isinstance(p, SchedulingPending):
            wp.phase, wp.node_id, wp.attempt, wp.decision_event_id = "pending", None, p.attempt, event.id
        elif event.type == EventType.WORKLOAD_RUNNING:
            # only a running workload stays where it is; one whose node died while launching
            # (enclave.launched, no workload.running yet) is placed again
            wp.phase = "running"
            wp.node_id = getattr(p, "node_id", wp.node_id)
        elif event.type in (EventType.WORKLOAD_EXITED, EventType.FAILED):
            del self.workloads[event.workload_id]
            # node ids repeat: one shared string per node, not one per workload
            self.ended[event.workload_id] = sys.intern(wp.node_id) if wp.node_id else None

    def load(self) -> dict[str, int]:
        """Active placements (scheduled or running) per node."""
        counts: Counter[str] = Counter()
        for wp in self.workloads.values():
            if wp.phase in _ACTIVE and wp.node_id:
                counts[wp.node_id] += 1
        return dict(counts)

    def placed(self) -> dict[str, int]:
        """Workloads ever placed per node, ended ones included (each counted on its last node).

        Derived from the workloads, not counted per event, so folding an event twice (the
        scheduler service applies its own decisions before reading them back) counts it once.
        """
        counts = Counter(wp.node_id for wp in self.workloads.values() if wp.node_id)
        counts.update(node for node in self.ended.values() if node)
        return dict(counts)


_TRACKED = frozenset({
    EventType.PUSHED, EventType.SCHEDULED, EventType.SCHEDULING_PENDING,
    EventType.WORKLOAD_RUNNING, EventType.WORKLOAD_EXITED, EventType.FAILED,
})


@dataclass(frozen=True)
class Action:
    """One placement the service must decide now.

    ``key`` is what the output's ``Nats-Msg-Id`` derives from (the decision it follows, plus
    why), so two scheduler instances, or a restart, make the same event at most once.
    """

    workload_id: str
    requirements: TeeRequirements
    attempt: int
    key: str
    lost_node: str | None = None


def due_actions(view: PlacementView, live_nodes: Iterable[str]) -> list[Action]:
    """Workloads to place now: those waiting, and those whose node went away before running.

    A workload already running is not moved (its node reports what happens to it); one whose
    requirements are unknown (no ``submitted`` event seen) is skipped.
    """
    live = set(live_nodes)
    actions: list[Action] = []
    for wp in view.workloads.values():
        if wp.requirements is None or wp.decision_event_id is None:
            continue
        if wp.phase == "pending":
            actions.append(Action(wp.workload_id, wp.requirements, wp.attempt, f"{wp.decision_event_id}#retry"))
        elif wp.phase == "scheduled" and wp.node_id not in live:
            actions.append(
                Action(wp.workload_id, wp.requirements, wp.attempt + 1, f"{wp.decision_event_id}#lost", wp.node_id)
            )
    return actions


def running_on_lost_nodes(view: PlacementView, live_nodes: Iterable[str]) -> list[WorkloadPlacement]:
    """Workloads the trail says run on a node that is no longer live: nothing will report their end."""
    live = set(live_nodes)
    return [wp for wp in view.workloads.values() if wp.phase == "running" and wp.node_id not in live]


# --- slot reservations (the guard against two schedulers filling the same slot) ------------


def gone_from(view: PlacementView, node_id: str) -> set[str]:
    """Workloads the view positively knows no longer hold a slot on ``node_id`` (ended or placed elsewhere).

    A workload the view has not seen is not in this set: another scheduler may just have
    placed it, and its reservation must stand.
    """
    return set(view.ended) | {
        wp.workload_id for wp in view.workloads.values()
        if wp.phase in ("scheduled", "running", "pending") and wp.node_id != node_id
    }


def reserve_slot(
    holders: dict[str, int], workload_id: str, attempt: int, capacity: int, gone: set[str]
) -> dict[str, int] | None:
    """The node's reservations with ``workload_id`` added, or ``None`` when the node is full.

    ``holders`` maps workload id → placement attempt; entries in ``gone`` are dropped first
    (lazy release). A workload that already holds a slot keeps it (a retried decision).
    """
    kept = {wl: a for wl, a in holders.items() if wl not in gone or wl == workload_id}
    if workload_id in kept:
        return {**kept, workload_id: attempt}
    if len(kept) >= capacity:
        return None
    return {**kept, workload_id: attempt}
