"""Slot reservations in NATS KV: two schedulers never hand the same slot out twice.

The ``schedule`` stage may run as several replicas, and the scheduler service decides beside
it; each picks the least-loaded node from its own view of the trail, so two of them can pick
the same last slot. Before a placement becomes an event, :func:`reserve` adds the workload to
the node's key in the bucket ``CCPIPE_PLACEMENTS`` with a compare-and-set on the key's
revision: of two racing schedulers one wins, the other sees the node full and chooses again.

Reservations are released lazily: the next reservation on a node drops the workloads its
caller's trail view knows have ended or moved (:func:`~ccpipe.stages.deploy.scheduler.reserve_slot`).
"""

from __future__ import annotations

import json

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.schemas.errors import TransientError
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.deploy.inventory import NodeAnnouncement
from ccpipe.stages.deploy.scheduler import NoFit, Placement, PlacementView, choose_node, gone_from, reserve_slot

BUCKET = "CCPIPE_PLACEMENTS"
_ATTEMPTS = 20


def _unreachable(what: str, exc: BaseException) -> TransientError:
    return TransientError(f"{what} in KV bucket {BUCKET} failed: {exc!r}", code="deploy.placements.unreachable")


async def placements_bucket(js: JetStreamContext) -> KeyValue:
    """The ``CCPIPE_PLACEMENTS`` bucket, created on first use; raises :class:`TransientError`."""
    try:
        try:
            return await js.key_value(BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=BUCKET, description="ccpipe: slots reserved per node by the scheduler", history=1,
                storage=StorageType.FILE, replicas=cluster_replicas(js),
            ))
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable("opening", exc) from exc


async def reserved(js: JetStreamContext, node_id: str) -> tuple[dict[str, int], int]:
    """The node's reservations (workload id → attempt) and the key's revision (0 if none)."""
    kv = await placements_bucket(js)
    try:
        entry = await kv.get(node_id)
    except (KeyNotFoundError, KeyDeletedError):
        return {}, 0
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable(f"reading node {node_id}", exc) from exc
    try:
        holders = json.loads(entry.value or b"{}")
    except ValueError:
        holders = {}  # a damaged value is replaced by the next reservation
    clean = {str(k): int(v) for k, v in holders.items()} if isinstance(holders, dict) else {}
    return clean, entry.revision or 0


async def reserve(
    js: JetStreamContext, node_id: str, workload_id: str, attempt: int, capacity: int, gone: set[str]
) -> bool:
    """Reserve a slot of ``node_id`` for the workload; False if the node is full.

    Compare-and-set on the key's revision, retried when another scheduler wrote in between.
    Raises :class:`TransientError` when NATS does not answer or the key keeps changing.
    """
    kv = await placements_bucket(js)
    for _ in range(_ATTEMPTS):
        holders, revision = await reserved(js, node_id)
        updated = reserve_slot(holders, workload_id, attempt, capacity, gone)
        if updated is None:
            return False
        value = json.dumps(updated, sort_keys=True).encode()
        try:
            if revision:
                await kv.update(node_id, value, last=revision)
            else:
                await kv.create(node_id, value)
            return True
        except KeyWrongLastSequenceError:
            continue  # another scheduler reserved on this node meanwhile: read again
        except (NatsError, NatsTimeoutError, OSError) as exc:
            raise _unreachable(f"reserving on node {node_id}", exc) from exc
    raise TransientError(f"slots of node {node_id} kept changing; gave up reserving", code="deploy.placements.busy")


async def place(
    js: JetStreamContext,
    nodes: list[NodeAnnouncement],
    requirements: TeeRequirements,
    view: PlacementView,
    *,
    workload_id: str,
    attempt: int,
    allow_emulated: bool,
    exclude: frozenset[str] = frozenset(),
) -> Placement | NoFit:
    """Choose a node (:func:`~ccpipe.stages.deploy.scheduler.choose_node`) and reserve its slot.

    A node whose slots another scheduler took meanwhile counts as full and the choice is made
    again, so the result is either a reserved placement or why nothing fits. Raises
    :class:`TransientError` when NATS does not answer.
    """
    load, placed = dict(view.load()), view.placed()
    for _ in range(len(nodes) + 1):
        decision = choose_node(nodes, requirements, allow_emulated=allow_emulated, load=load, placed=placed,
                               exclude=exclude)
        if isinstance(decision, NoFit):
            return decision
        node = decision.node
        if await reserve(js, node.node_id, workload_id, attempt, node.capacity.total, gone_from(view, node.node_id)):
            return decision
        load[node.node_id] = node.capacity.total  # full by the reservations: choose again
    return choose_node(nodes, requirements, allow_emulated=allow_emulated, load=load, placed=placed, exclude=exclude)
