"""The scheduler service: places waiting workloads and reschedules those whose node went away.

The ``schedule`` stage decides once per ``pushed`` event. This long-running service keeps the
decisions true afterwards. Every ``interval`` seconds it folds the new events of the trail
into a :class:`~ccpipe.stages.deploy.scheduler.PlacementView`, lists the live attested nodes
(:func:`~ccpipe.stages.deploy.inventory_kv.list_admitted_nodes`: verified TEE facts, heartbeats
signed by the attested node key; others are ignored, counted and logged), and for each
:func:`~ccpipe.stages.deploy.scheduler.due_actions` entry:

* a workload that waits (``scheduling.pending``) is placed as soon as a node fits → ``scheduled``
  (no new event while nothing fits: the pending reason already says why);
* a workload placed on a node that is gone (its key withdrawn or expired) and that is not yet
  running → a new ``scheduled`` on another node (``attempt`` + 1, ``replaces_node``), or a new
  ``scheduling.pending`` if none fits;
* a workload that was running on a node gone for :data:`LOST_RUNNING_GRACE_S` → ``failed``
  (``runner.node.lost``): it died with its node, and nothing else would ever say so. It is not
  restarted (it may have had effects; resubmitting is the owner's call). The grace keeps a node
  that only missed a few heartbeats under load from losing its workloads.

Every event's ``Nats-Msg-Id`` derives from the decision it follows, so a restart or a second
instance of this service makes each decision at most once. Node expiry leaves no event a
watcher would see, hence the periodic check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EventPublisher, connect_as, provision_stream
from ccpipe.pipeline.event_trust import InputTrust, input_trust
from ccpipe.pipeline.periodic import every, in_background
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event, Source, Subject, derived_msg_id
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType, Failed, Scheduled
from ccpipe.schemas.failure import FailureReason
from ccpipe.stages.deploy.admission import NodeGate
from ccpipe.stages.deploy.handler import write_k8s_manifest
from ccpipe.stages.deploy.inventory import NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import list_admitted_nodes
from ccpipe.stages.deploy.placements_kv import place
from ccpipe.stages.deploy.scheduler import (
    Action,
    NoFit,
    Placement,
    PlacementView,
    decision_payload,
    due_actions,
    running_on_lost_nodes,
)
from ccpipe.stages.deploy.trail import refresh_view

log = logging.getLogger("ccpipe.deploy.scheduler")

COMPONENT = "schedule"
LOST_RUNNING_GRACE_S = 30.0
"""How long a node must stay gone before the workloads running on it are declared lost."""
"""The component name on the service's events (the same key signs the stage's decisions)."""


@dataclass
class SchedulerLoop:
    """One scheduler and its view of the trail."""

    js: JetStreamContext
    settings: Settings
    publisher: EventPublisher
    endpoints: Endpoints
    instance: str = ""
    view: PlacementView = field(default_factory=PlacementView)
    trust: InputTrust = field(init=False)
    """What the view admits: only events signed by a component allowed to emit them."""
    gate: NodeGate = field(default_factory=lambda: NodeGate(log))
    """Admits only attested nodes' signed heartbeats; counts and logs the others."""

    lost_grace_s: float = LOST_RUNNING_GRACE_S
    """How long a running workload's node must stay gone before the workload is declared lost."""
    lost_since: dict[str, float] = field(default_factory=dict)
    """Workload id → when this loop first saw its node gone while it ran."""

    def __post_init__(self) -> None:
        self.trust = input_trust(self.settings.data_dir)

    async def tick(self) -> list[Event]:
        """One round: refresh, then place or reschedule what is due; returns the events published."""
        await refresh_view(self.js, self.view, self.trust)
        nodes = await list_admitted_nodes(self.js, self.gate)
        actions = due_actions(self.view, [n.node_id for n in nodes])
        out: list[Event] = []
        for action in actions:
            event = await self._decide(action, nodes)
            if event is None:
                continue
            msg_id = derived_msg_id(action.workload_id, event.type, action.key)
            await self.publisher.publish(event, msg_id)
            placed = next((n for n in nodes if n.node_id == event.subject.node), None)
            if placed is not None and self.settings.k8s_manifest_dir is not None:
                await write_k8s_manifest(self.js, self.settings, self.endpoints, action.workload_id,
                                         Placement(placed, ""))
            out.append(event)
            # count the placement at once, so the next action of this round sees the load
            self.view.apply(event)
        for event, key in self._lost_running([n.node_id for n in nodes], time.monotonic()):
            await self.publisher.publish(event, derived_msg_id(event.workload_id, event.type, key))
            out.append(event)
            self.view.apply(event)
        return out

    def _lost_running(self, live: list[str], now: float) -> list[tuple[Event, str]]:
        """``failed`` events for workloads whose node has been gone for the grace period while they ran."""
        lost = {wp.workload_id: wp for wp in running_on_lost_nodes(self.view, live)}
        self.lost_since = {wl: self.lost_since.get(wl, now) for wl in lost}  # a node back: forgotten
        out = []
        for wl, wp in lost.items():
            if now - self.lost_since[wl] < self.lost_grace_s:
                continue
            reason = FailureReason(
                stage=COMPONENT, code="runner.node.lost",
                message=f"node {wp.node_id} stopped reporting while {wl} ran on it: the workload ended with it",
                hint="check the node; resubmit the workload (push again) to run it elsewhere")
            event = Event(type=EventType.FAILED, workload_id=wl, source=Source(component=COMPONENT,
                          instance=self.instance), subject=Subject(node=wp.node_id), causation_id=wp.decision_event_id,
                          payload=Failed(reason=reason, input_event_id=wp.decision_event_id,
                                         input_type=EventType.SCHEDULED.value))
            out.append((event, f"{wp.decision_event_id}#node-lost"))
        return out

    async def _decide(self, action: Action, nodes: list[NodeAnnouncement]) -> Event | None:
        exclude = frozenset({action.lost_node}) if action.lost_node else frozenset()
        decision = await place(
            self.js, nodes, action.requirements, self.view, workload_id=action.workload_id,
            attempt=action.attempt, allow_emulated=self.settings.allow_emulated, exclude=exclude,
        )
        if isinstance(decision, NoFit) and action.lost_node is None:
            return None  # still waiting; the pending event already says why
        etype, payload = decision_payload(decision, attempt=action.attempt, replaces_node=action.lost_node)
        wp = self.view.workloads[action.workload_id]
        node = payload.node_id if isinstance(payload, Scheduled) else None
        return Event(
            type=etype,
            workload_id=action.workload_id,
            source=Source(component=COMPONENT, instance=self.instance),
            subject=Subject(node=node),
            causation_id=wp.decision_event_id,
            payload=payload,
        )

    async def run(self, interval: float) -> None:
        """Tick every ``interval`` seconds until cancelled; errors are logged, never fatal."""

        async def round_() -> None:
            for event in await self.tick():
                log.info("%s %s: %s", event.workload_id, event.type.value, getattr(event.payload, "reason", ""))

        await every(interval, round_, log, "scheduler round")


@asynccontextmanager
async def serve_scheduler(
    settings: Settings, endpoints: Endpoints, *, interval: float = 0.5, instance: str = "",
    lost_grace_s: float = LOST_RUNNING_GRACE_S,
) -> AsyncIterator[Endpoints]:
    """Run the scheduler service while the block is open (a ``ServiceFactory``); yields ``endpoints``.

    Raises :class:`TransientError` if NATS cannot be reached and :class:`ConfigurationError`
    for a bad interval.
    """
    if interval <= 0:
        raise ConfigurationError(f"scheduler interval {interval} must be positive", code="deploy.scheduler.interval")
    nc = await connect_as(settings, endpoints.nats_url, Component.SCHEDULE, name="ccpipe-scheduler")
    try:
        js = nc.jetstream()
        await provision_stream(js)
        publisher = EventPublisher(js, signer=event_signer(settings.data_dir))
        loop = SchedulerLoop(js, settings, publisher, endpoints, instance, lost_grace_s=lost_grace_s)
        async with in_background(loop.run(interval), "ccpipe-scheduler"):
            yield endpoints
    finally:
        await nc.close()
