"""Node inventory in NATS KV: runners announce themselves and heartbeat; a silent node drops out.

The bucket ``CCPIPE_NODES`` holds one key per node (its id), the value a
:class:`~ccpipe.stages.deploy.inventory.NodeAnnouncement` as JSON. Two clocks make a node that stops
heartbeating disappear:

* each heartbeat is stored with a per-message TTL (``Nats-TTL``, nats-server >= 2.11) of
  ``ttl_factor × interval``, so a node is gone three missed heartbeats after its last one,
  whatever interval it chose;
* the bucket's ``max_age`` (:data:`BUCKET_MAX_AGE_S`) is the backstop for a server that ignores
  per-message TTLs (2.10 stores the header as a plain one), and caps the interval.

Readers also drop an entry stored longer ago than its ``ttl_s`` (by the server's store time,
so a node's skewed clock does not matter), so a value the server kept longer than asked never
counts as a live node.

A server-side expiry leaves no delete marker a watcher would see (unless the bucket has
``subject_delete_marker_ttl``), so consumers of this inventory list it periodically rather
than watch it (see :mod:`ccpipe.stages.deploy.scheduler_service`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue
from pydantic import ValidationError

from ccpipe.crypto import jose
from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.pipeline.periodic import cancel_and_wait, stop_if_cancelled
from ccpipe.pipeline.reader import ephemeral_pull
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError
from ccpipe.schemas.nodes import NODE_ATTESTATIONS_BUCKET, NodeAttestation, heartbeat_message
from ccpipe.stages.deploy.admission import NodeGate
from ccpipe.stages.deploy.inventory import NodeAnnouncement, check_node_id

log = logging.getLogger("ccpipe.deploy.inventory")

HeartbeatSigner = Callable[[bytes], bytes]
"""Signs a heartbeat's message with the node key (Ed25519: 64-byte signature)."""

BUCKET = "CCPIPE_NODES"
BUCKET_MAX_AGE_S = 30.0
"""Longest a heartbeat lives even if the server ignores per-message TTLs."""
LISTING_CONSUMER_GRACE_S = 2.0
"""How long the server keeps a node listing's consumer after the listing stopped reading."""
LISTING_TIMEOUT_S = 5.0
"""Longest a node listing waits for the values its consumer counted."""
TTL_FACTOR = 3.0
"""A node is gone after this many missed heartbeats."""


def _unreachable(what: str, exc: BaseException) -> TransientError:
    return TransientError(f"{what} in KV bucket {BUCKET} failed: {exc!r}", code="deploy.inventory.unreachable")


async def nodes_bucket(js: JetStreamContext) -> KeyValue:
    """The ``CCPIPE_NODES`` bucket, created on first use (memory storage: heartbeats are ephemeral).

    Raises :class:`TransientError` when NATS does not answer.
    """
    try:
        try:
            return await js.key_value(BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    description="ccpipe: enclave runner nodes and their heartbeats",
                    history=1,
                    ttl=BUCKET_MAX_AGE_S,
                    storage=StorageType.MEMORY, replicas=cluster_replicas(js),
                )
            )
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable("opening", exc) from exc


def heartbeat_ttl(interval: float) -> float:
    """The TTL of one heartbeat; raises :class:`ConfigurationError` for an interval the bucket cannot keep."""
    if interval <= 0:
        raise ConfigurationError(f"heartbeat interval {interval} s must be positive", code="deploy.inventory.interval")
    ttl = max(TTL_FACTOR * interval, 1.0)
    if ttl > BUCKET_MAX_AGE_S:
        raise ConfigurationError(
            f"heartbeat interval {interval} s is too long: {TTL_FACTOR:g} missed beats exceed the bucket's "
            f"{BUCKET_MAX_AGE_S:g} s max age",
            hint=f"heartbeat at most every {BUCKET_MAX_AGE_S / TTL_FACTOR:g} s",
            code="deploy.inventory.interval",
        )
    return ttl


async def announce(js: JetStreamContext, announcement: NodeAnnouncement, *, ttl: float,
                   sign: HeartbeatSigner) -> NodeAnnouncement:
    """Store one heartbeat for the node (now, with ``ttl``, signed with ``sign``); returns what was stored.

    ``sign`` is the node key's signing function: the scheduler admits a heartbeat only if the
    key the node attested with signed it. Raises :class:`TransientError` when NATS does not confirm it.
    """
    check_node_id(announcement.node_id)
    await nodes_bucket(js)  # created on first use
    now = datetime.now(UTC)
    capacity = announcement.capacity
    signature = sign(heartbeat_message(announcement.node_id, now, capacity.total, capacity.free))
    stamped = announcement.model_copy(update={"heartbeat_at": now, "ttl_s": ttl, "sent_at": now,
                                              "signature": jose.b64url(signature)})
    try:
        # KeyValue.put has no TTL parameter; a KV put is a publish on the key's subject.
        await js.publish(f"$KV.{BUCKET}.{announcement.node_id}", stamped.to_json(), msg_ttl=ttl, timeout=5.0)
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable(f"heartbeat of node {announcement.node_id}", exc) from exc
    return stamped


async def withdraw(js: JetStreamContext, node_id: str) -> None:
    """Remove the node from the inventory at once (a clean shutdown)."""
    kv = await nodes_bucket(js)
    try:
        await kv.delete(node_id)
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable(f"removing node {node_id}", exc) from exc


@asynccontextmanager
async def node_heartbeat(
    js: JetStreamContext, announcement: NodeAnnouncement, *, sign: HeartbeatSigner, interval: float = 1.0
) -> AsyncIterator[NodeHeartbeat]:
    """Announce the node, heartbeat every ``interval`` seconds while the block runs, withdraw on exit.

    Every heartbeat is signed with ``sign`` (the node key's, see :func:`announce`).

    The first announcement is stored before the block starts (so the node is schedulable at
    once). A heartbeat that fails is logged and retried at the next tick; the node drops out
    only if beats keep failing for ``3 × interval``. Use :meth:`NodeHeartbeat.update` to change
    what is announced (free capacity). Raises :class:`ConfigurationError` for a bad interval
    or node id and :class:`TransientError` if the first announcement cannot be stored.
    """
    ttl = heartbeat_ttl(interval)
    beat = NodeHeartbeat(js, announcement, ttl, sign)
    await beat.send()
    task = asyncio.create_task(beat.run(interval), name=f"ccpipe-heartbeat-{announcement.node_id}")
    try:
        yield beat
    finally:
        await cancel_and_wait(task)  # bounded, even if a cancellation lands inside a publish
        with contextlib.suppress(TransientError):
            await withdraw(js, announcement.node_id)


class NodeHeartbeat:
    """The running heartbeat of one node (what :func:`node_heartbeat` yields)."""

    def __init__(self, js: JetStreamContext, announcement: NodeAnnouncement, ttl: float,
                 sign: HeartbeatSigner) -> None:
        self.js = js
        self.announcement = announcement
        self.ttl = ttl
        self.sign = sign
        self.beats = 0

    async def send(self) -> None:
        """Store one heartbeat now."""
        await announce(self.js, self.announcement, ttl=self.ttl, sign=self.sign)
        self.beats += 1

    async def update(self, announcement: NodeAnnouncement) -> None:
        """Announce something new (same node id), at once."""
        if announcement.node_id != self.announcement.node_id:
            raise ConfigurationError("a heartbeat cannot change its node id", code="deploy.inventory.node_id")
        self.announcement = announcement
        await self.send()

    async def run(self, interval: float) -> None:
        """Heartbeat until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.send()
            except TransientError as exc:
                log.warning("node %s: heartbeat failed: %s", self.announcement.node_id, exc.one_line())
            stop_if_cancelled()


@dataclass(frozen=True)
class _Current:
    """A key's current value and when the server stored it."""

    key: str
    value: bytes
    stored_at: datetime | None


def _removed(msg: Msg) -> bool:
    """True for a delete or purge marker (a client's ``KV-Operation``, or a marker the server placed)."""
    headers = msg.headers or {}
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers


async def _current_entries(js: JetStreamContext) -> list[_Current]:
    """The latest value of every key (deleted ones skipped), from one consumer instead of one request per key.

    Not nats-py's ``KeyValue.watchall``: it ends its initial values on the ``num_pending`` of a
    consumer info asked *after* its push consumer started delivering, so when the server has
    sent the values but they have not reached the client yet, it says "no more" before the
    first one (about one listing in a thousand saw no node at all; a scheduler then took a
    live node for dead and moved its work, or left a workload pending with "no nodes are
    announced"). A pull consumer delivers nothing until asked, so what it has pending before
    the first fetch is every key's current value, and each message says how many follow it.

    The consumer is gone :data:`LISTING_CONSUMER_GRACE_S` after the listing (a scheduler lists
    every round: consumers kept longer piled up on the server until it refused new ones).
    Raises NATS errors (:class:`nats.errors.TimeoutError` when the values do not come).
    """
    prefix = f"$KV.{BUCKET}."
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE, filter_subject=f"{prefix}>",
        inactive_threshold=LISTING_CONSUMER_GRACE_S, mem_storage=True,
    )
    sub = await ephemeral_pull(js, f"KV_{BUCKET}", config)
    latest: dict[str, _Current] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTING_TIMEOUT_S
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            if loop.time() > deadline:
                raise NatsTimeoutError
            try:
                msgs = await sub.fetch(min(pending, 256), timeout=1.0)
            except TimeoutError:  # nats-py raises both its own and asyncio's TimeoutError here
                # what was pending may have expired meanwhile (a node's TTL): ask again
                pending = (await sub.consumer_info()).num_pending or 0
                continue
            for msg in msgs:
                key = msg.subject.removeprefix(prefix)
                if _removed(msg):
                    latest.pop(key, None)
                else:
                    latest[key] = _Current(key, msg.data, msg.metadata.timestamp)
            pending = (msgs[-1].metadata.num_pending or 0) if msgs else pending
    finally:
        with contextlib.suppress(Exception):  # the consumer expires on its own anyway
            await sub.unsubscribe()
    return list(latest.values())


async def list_nodes(js: JetStreamContext) -> list[NodeAnnouncement]:
    """Every live node as its heartbeat announces it (attested or not), sorted by id.

    Entries that are malformed (logged) or older than their TTL are left out. Raises
    :class:`TransientError` when NATS does not answer. Placement uses :func:`list_admitted_nodes`.
    """
    await nodes_bucket(js)  # created on first use
    now = datetime.now(UTC)
    nodes: list[NodeAnnouncement] = []
    try:
        entries = await _current_entries(js)
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable("listing nodes", exc) from exc
    for entry in entries:
        try:
            node = NodeAnnouncement.from_json(entry.value, key=entry.key)
        except InvalidInput as exc:  # one bad entry must not hide the others
            log.warning("ignoring node %s: %s", entry.key, exc.one_line())
            continue
        # judge age by the server's store time, not the node's clock (which may be skewed)
        if entry.stored_at is not None:
            node = node.model_copy(update={"heartbeat_at": entry.stored_at})
        if not node.stale(now):
            nodes.append(node)
    return sorted(nodes, key=lambda n: n.node_id)


async def list_attestations(js: JetStreamContext, node_ids: Iterable[str]) -> dict[str, NodeAttestation]:
    """The attestation service's records of ``node_ids`` (those that have one), by node id.

    One get per node, all at once. Raises :class:`TransientError` when NATS does not answer.
    """
    try:
        try:
            kv = await js.key_value(NODE_ATTESTATIONS_BUCKET)
        except BucketNotFoundError:
            return {}  # no node has joined yet (the attestation service makes the bucket)
        ids = list(node_ids)
        found = await asyncio.gather(*(_record(kv, node_id) for node_id in ids))
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise TransientError(f"reading KV bucket {NODE_ATTESTATIONS_BUCKET} failed: {exc!r}",
                             code="deploy.inventory.unreachable") from exc
    return {node_id: record for node_id, record in zip(ids, found, strict=True) if record is not None}


async def _record(kv: KeyValue, node_id: str) -> NodeAttestation | None:
    try:
        entry = await kv.get(node_id)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    try:
        return NodeAttestation.model_validate_json(entry.value or b"")
    except ValidationError:
        log.warning("ignoring the malformed attestation record of node %s", node_id)
        return None


async def list_admitted_nodes(js: JetStreamContext, gate: NodeGate) -> list[NodeAnnouncement]:
    """Every live, attested node whose heartbeat its attested key signed, with its verified TEE facts.

    ``gate`` (:class:`~ccpipe.stages.deploy.admission.NodeGate`) judges the heartbeats and
    counts and logs those it ignores. Raises :class:`TransientError` when NATS does not answer.
    """
    heartbeats = await list_nodes(js)
    return gate.admit(heartbeats, await list_attestations(js, [h.node_id for h in heartbeats]))
