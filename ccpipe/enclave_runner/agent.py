"""The node agent: announce the node, take the ``scheduled`` events meant for it, launch them.

* The node first joins by attesting (:func:`ccpipe.enclave_runner.join.attest_node`: TEE
  evidence binding a fresh nonce and its node key, verified by the attestation service), then
  announces itself (the verified TEE, backend and TCB, its capacity) in the inventory with a
  heartbeat signed by its node key (:func:`ccpipe.stages.deploy.inventory_kv.node_heartbeat`)
  while the agent runs, and updates its free capacity as launches start and end.
* Its stage, ``runner-<node_id>``, consumes ``scheduled``; events for other nodes are ignored
  (the handler returns nothing). An event for this node starts the launch flow
  (:class:`~ccpipe.enclave_runner.launch.Launcher`) as a task and is acknowledged at once: a workload
  may run far longer than the stream's ack wait, and the launch publishes its own events
  (``enclave.launched``, ``workload.running``, ``workload.exited`` or one ``failed``), each
  de-duplicated on the scheduled event's id. A redelivered ``scheduled`` event is recognised
  (in memory, and from the trail: the workload started or ended) and not launched twice.
* Since it is acknowledged at once, a launch the node's previous run (same node id: a killed
  ``ccpipe up`` or ``ccpipe runner``, restarted) began and never started is not delivered again,
  and the scheduler does not move it (the node is alive). At start, :meth:`NodeAgent.recover`
  finds the placements on this node that never started (from its slot reservations and the
  trail) and launches them again.
* :func:`serve_node_agent` is the service factory (``ccpipe.pipeline.app.ServiceFactory``); the
  embedded default runs one emulated SEV-SNP node. ``ccpipe runner`` runs one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from ccpipe.enclave_runner.join import attest_node, load_or_create_node_key, node_signer
from ccpipe.enclave_runner.kbs import KbsSessionFactory
from ccpipe.enclave_runner.launch import Launcher, LaunchReport
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.enclave_runner.run_claims import KvRunClaims
from ccpipe.pipeline.bus import EventPublisher, close_within, connect_as, provision_stream
from ccpipe.pipeline.event_trust import InputTrust, input_trust
from ccpipe.pipeline.nats_auth import runner_identity
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError
from ccpipe.schemas.events import EventType, Scheduled
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import NodeHeartbeat, node_heartbeat
from ccpipe.stages.deploy.placements_kv import reserved

log = logging.getLogger("ccpipe.runner")
REPORTS_KEPT = 64
"""Launch reports a node agent keeps (the trail holds every launch's outcome)."""
SEEN_KEPT = 4096
"""``scheduled`` event ids a node agent remembers, against taking one twice while it launches."""

HEARTBEAT_INTERVAL_S = 1.0


def default_node_id(tee: str = "emulated-snp") -> str:
    """``<host>-<tee>`` in the inventory's node-id alphabet (lower-case, digits, ``.-_``)."""
    raw = f"{socket.gethostname()}-{tee}".lower()
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:63].strip("-._")
    return cleaned or "node"


def embedded_node_id() -> str:
    """The node id of the embedded default's one runner node."""
    return default_node_id("emulated-snp")


class NodeAgent:
    """One node's agent: its stage handler, its running launches and its capacity."""

    def __init__(self, node: RunnerNode, launcher: Launcher, js: JetStreamContext, trust: InputTrust) -> None:
        self.node, self.launcher, self.js, self.trust = node, launcher, js, trust
        self.seen: OrderedDict[str, None] = OrderedDict()
        """``scheduled`` events taken, the latest :data:`SEEN_KEPT` (older ones the trail answers for)."""
        self.tasks: set[asyncio.Task[LaunchReport]] = set()
        self.reports: deque[LaunchReport] = deque(maxlen=REPORTS_KEPT)
        """The latest launches' reports (for tests and diagnostics; bounded, a long run keeps no history)."""
        self.slots = asyncio.Semaphore(node.capacity)
        self.heartbeat: NodeHeartbeat | None = None

    def stage(self) -> StageSpec:
        """The ``runner-<node_id>`` stage: input ``scheduled``."""
        return StageSpec(
            name=f"runner-{self.node.node_id}",
            input_type=EventType.SCHEDULED,
            output_types=(EventType.ENCLAVE_LAUNCHED, EventType.WORKLOAD_RUNNING, EventType.WORKLOAD_EXITED),
            handler=self.on_scheduled,
            description=self.on_scheduled.__doc__ or "",
            hint="check the runner node's log (ccpipe runner) and its KBS and registry endpoints",
        )

    async def _latest(self, workload_id: str, etype: EventType) -> Event | None:
        try:
            return await workload_event(self.js, workload_id, etype, trust=self.trust)
        except InvalidInput:
            return None
        except (NatsError, OSError) as exc:
            raise TransientError(f"reading the trail of {workload_id} failed: {exc!r}",
                                 code="runner.trail") from exc

    async def _already_started(self, event: Event) -> bool:
        # A launch this node began before it restarted (SIGKILL, a crash) and that never started
        # the workload is begun again: the node keeps its id, so no reschedule would move it.
        # One that started is not (at most one start; the run claim guards the rest).
        for etype in (EventType.WORKLOAD_RUNNING, EventType.WORKLOAD_EXITED, EventType.FAILED):
            if await self._latest(event.workload_id, etype) is not None:
                return True
        return False

    async def _superseded(self, event: Event) -> bool:
        # A reschedule (this node missed its heartbeats) makes an older placement void: only the
        # workload's latest `scheduled` event may start it, so it never runs on two nodes.
        latest = await self._latest(event.workload_id, EventType.SCHEDULED)
        return latest is not None and latest.id != event.id

    async def on_scheduled(self, event: Event) -> Sequence[Output]:
        """Launch a workload scheduled on this node (events for other nodes are ignored)."""
        payload = event.payload
        if not isinstance(payload, Scheduled) or payload.node_id != self.node.node_id:
            return []
        if event.id in self.seen:
            return []
        # before any wait: the same event from the durable and from recover()
        self.seen[event.id] = None
        while len(self.seen) > SEEN_KEPT:  # an older one seen again is caught by _already_started
            self.seen.popitem(last=False)
        if await self._already_started(event):
            return []
        if await self._superseded(event):
            log.warning("runner %s: placement %s of %s was superseded by a reschedule; not launching",
                        self.node.node_id, event.id, event.workload_id)
            return []
        task = asyncio.create_task(self._run(event), name=f"ccpipe-launch-{event.workload_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return []

    async def recover(self) -> int:
        """Launch again what this node's previous run left unstarted; returns how many.

        The candidates are the workloads the schedulers reserved a slot of this node for
        (``CCPIPE_PLACEMENTS``, which a runner may read); one is launched when its latest
        ``scheduled`` event names this node and it has neither started nor ended
        (:meth:`on_scheduled` checks both).
        """
        try:
            holders, _ = await reserved(self.js, self.node.node_id)
        except (NatsError, OSError) as exc:
            raise TransientError(f"reading the slots of node {self.node.node_id} failed: {exc!r}",
                                 code="runner.placements") from exc
        begun = 0
        for workload_id in holders:
            scheduled = await self._latest(workload_id, EventType.SCHEDULED)
            if scheduled is None or scheduled.id in self.seen:
                continue
            payload = scheduled.payload
            if isinstance(payload, Scheduled) and payload.node_id == self.node.node_id:
                log.warning("runner %s: %s may have been placed here and not started (this node restarted); "
                            "launching it unless it started", self.node.node_id, workload_id)
                await self.on_scheduled(scheduled)
                begun += 1
        return begun

    async def _announce_free(self) -> None:
        if self.heartbeat is None:
            return
        free = max(0, self.node.capacity - len(self.tasks))
        ann = self.heartbeat.announcement
        with contextlib.suppress(TransientError):
            await self.heartbeat.update(ann.model_copy(update={"capacity": Capacity(total=ann.capacity.total,
                                                                                      free=free)}))

    async def _run(self, event: Event) -> LaunchReport:
        async with self.slots:
            await self._announce_free()
            try:
                report = await self.launcher.launch(event)
            except Exception:
                log.exception("runner %s: launch of %s could not report", self.node.node_id, event.workload_id)
                raise
            self.reports.append(report)
        current = asyncio.current_task()
        if current is not None:
            self.tasks.discard(current)  # so the capacity announced below counts this launch as done
        await self._announce_free()
        return report

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for running launches (then cancel what is left)."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@asynccontextmanager
async def run_node_agent(
    settings: Settings,
    endpoints: Endpoints,
    node: RunnerNode,
    *,
    kbs_session: KbsSessionFactory | None = None,
    drain_timeout_s: float = 30.0,
) -> AsyncIterator[NodeAgent]:
    """Run one node agent while the block is open (announce, consume, launch); yields it.

    Raises :class:`ConfigurationError` when no KBS URL is known, :class:`TransientError`
    when NATS or the attestation service cannot be reached, and
    :class:`~ccpipe.enclave_runner.join.NodeNotAdmitted` when the node's evidence is refused.
    """
    kbs_url = endpoints.kbs_url or settings.kbs_url
    if not kbs_url:
        raise ConfigurationError(
            "the runner node has no KBS to attest to", hint="start the KBS (ccpipe up) or set CCPIPE_KBS_URL",
            code="runner.kbs.missing",
        )
    nc = await connect_as(settings, endpoints.nats_url, runner_identity(node.node_id))
    try:
        js = nc.jetstream()
        await provision_stream(js)
        publisher = EventPublisher(js, signer=event_signer(settings.data_dir))
        trust = input_trust(settings.data_dir)

        async def publish(event: Event, msg_id: str) -> None:
            await publisher.publish(event, msg_id)

        async def lookup(workload_id: str, etype: EventType) -> Event:
            try:
                return await workload_event(js, workload_id, etype, trust=trust)
            except (NatsError, OSError) as exc:
                raise TransientError(f"reading the {etype.value} event of {workload_id} failed: {exc!r}",
                                     code="runner.trail") from exc

        # join by attesting before announcing anything: the scheduler places work only on nodes the
        # attestation service verified, by what it verified, with heartbeats signed by this key;
        # the KBS attributes key releases to this node by the same key's proof
        key = load_or_create_node_key(settings.data_dir, node.node_id)
        record = await attest_node(nc, settings.data_dir, node, key)
        launcher = Launcher(settings, node, kbs_url=kbs_url, publish=publish, lookup=lookup, kbs_session=kbs_session,
                            node_signer=node_signer(key), claim=KvRunClaims(js).claim)
        agent = NodeAgent(node, launcher, js, trust)
        announcement = NodeAnnouncement(
            node_id=node.node_id, tee=record.tee, backend=record.backend, emulated=record.emulated, tcb=record.tcb,
            capacity=Capacity(total=node.capacity, free=node.capacity), labels={"host": socket.gethostname()},
        )
        async with node_heartbeat(js, announcement, sign=node_signer(key), interval=HEARTBEAT_INTERVAL_S) as beat:
            agent.heartbeat = beat
            async with run_stages(endpoints.nats_url, settings, [agent.stage()], instance=node.node_id):
                try:
                    await agent.recover()
                except (TransientError, NatsError, OSError) as exc:  # the node still serves new placements
                    log.warning("runner %s: could not look for launches left unstarted: %r", node.node_id, exc)
                try:
                    yield agent
                finally:
                    await agent.drain(drain_timeout_s)
    finally:
        await close_within(nc)


@asynccontextmanager
async def serve_node_agent(settings: Settings, endpoints: Endpoints) -> AsyncIterator[Endpoints]:
    """Service factory of the embedded default: one emulated SEV-SNP node; yields ``endpoints`` unchanged."""
    node = RunnerNode(node_id=embedded_node_id(), tee="emulated-snp")
    async with run_node_agent(settings, endpoints, node):
        yield endpoints


__all__ = ["NodeAgent", "default_node_id", "embedded_node_id", "run_node_agent", "serve_node_agent"]
