"""Node admission over NATS: challenges and join requests in, attestation records and ``node.attested`` out.

Served beside the KBS (same process, same ``kbs`` identity, same attestation service) on
:data:`~ccpipe.schemas.nodes.CHALLENGE_SUBJECT` (queue group ``ccpipe-node-join``: replicas
share it) and on this instance's own ``ccpipe.nodes.join.<instance>``, which its challenges
name, so the instance that issued a nonce spends it. Only KBS credentials may subscribe to them. A verified join
publishes ``node.attested`` (workload id ``ccpipe-nodes``, the node as subject) and then stores
the :class:`~ccpipe.schemas.nodes.NodeAttestation` under the node id in
``CCPIPE_NODE_ATTESTATIONS``, a bucket only the KBS identity may write. A refused join gets the
reason in the reply and one log line; it leaves nothing in the trail, so a flood of bad joins
cannot flood it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, InvalidKeyError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.pipeline.event_trust import refresh_trusted_keys
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event, Source, Subject
from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.events import EventType
from ccpipe.schemas.nodes import (
    CHALLENGE_SUBJECT,
    JOIN_QUEUE,
    JOIN_SUBJECT,
    NODE_ATTESTATIONS_BUCKET,
    NODES_WORKLOAD,
    NodeAttestation,
    NodeJoinReply,
    NodeJoinRequest,
)
from ccpipe.stages.attest.appraisal import AttestationService
from ccpipe.stages.attest.kbs.audit import Publish
from ccpipe.stages.attest.kbs.nats_service import confirm_subscriptions, unsubscribe_all
from ccpipe.stages.attest.kbs.node_join import MAX_EVIDENCE_BYTES, NodeAdmission, NodeJoinRefused
from ccpipe.stages.attest.kbs.node_proof import NodeKeys

log = logging.getLogger("ccpipe.attest.nodes")


async def node_attestations_bucket(js: JetStreamContext) -> KeyValue:
    """The ``CCPIPE_NODE_ATTESTATIONS`` bucket, created on first use (file storage: records outlive restarts).

    Raises :class:`TransientError` when NATS does not answer.
    """
    try:
        try:
            return await js.key_value(NODE_ATTESTATIONS_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=NODE_ATTESTATIONS_BUCKET, history=1, storage=StorageType.FILE, direct=True,
                replicas=cluster_replicas(js),
                description="ccpipe: runner nodes' verified attestations (written by the attestation service only)"))
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise TransientError(f"opening KV bucket {NODE_ATTESTATIONS_BUCKET} failed: {exc!r}",
                             code="attest.node.bucket") from exc


def attested_node_keys(kv: KeyValue) -> NodeKeys:
    """Looks up a node's attested key in ``kv`` (``CCPIPE_NODE_ATTESTATIONS``), for node proofs.

    A node without a readable record has no key (None): its requests are attributed to no node.
    Raises :class:`TransientError` when NATS does not answer (the attestation is then retried).
    """
    async def node_key(node_id: str) -> str | None:
        try:
            entry = await kv.get(node_id)
        except (KeyNotFoundError, KeyDeletedError, InvalidKeyError):
            return None
        except (NatsError, NatsTimeoutError, OSError) as exc:
            raise TransientError(f"reading the attestation of node {node_id} failed: {exc!r}",
                                 code="attest.node.lookup") from exc
        try:
            return NodeAttestation.model_validate_json(entry.value or b"").node_key
        except ValidationError:
            log.warning("ignoring the malformed attestation record of node %s", node_id)
            return None

    return node_key


class NatsNodeJoin:
    """Serves :class:`NodeAdmission` on the node-join subjects."""

    def __init__(self, service: AttestationService, kv: KeyValue, publish: Publish, *, instance: str = "") -> None:
        """Admit with ``service``'s verifiers, store records in ``kv``, store events with ``publish``."""
        self.admission = NodeAdmission(service, f"{JOIN_SUBJECT}.{secrets.token_hex(8)}")
        self.kv, self.publish, self.instance = kv, publish, instance
        self._subs: list[Subscription] = []
        self._nc: NatsClient | None = None

    async def start(self, nc: NatsClient) -> None:
        """Subscribe to the challenge subject (queue group ``ccpipe-node-join``) and this instance's join subject."""
        self._nc = nc
        self._subs.append(await nc.subscribe(CHALLENGE_SUBJECT, queue=JOIN_QUEUE, cb=self._handle))
        self._subs.append(await nc.subscribe(self.admission.join_subject, cb=self._handle))
        await confirm_subscriptions(nc, "node admission")

    async def stop(self) -> None:
        """Unsubscribe."""
        await unsubscribe_all(self._subs)

    async def _handle(self, msg: Msg) -> None:
        if msg.subject == CHALLENGE_SUBJECT:
            body = self.admission.challenge().model_dump_json().encode()
        else:
            body = (await self.join(msg.data)).model_dump_json().encode()
        if msg.reply and self._nc is not None:
            with contextlib.suppress(NatsError):  # the node gave up waiting
                await self._nc.publish(msg.reply, body)

    async def join(self, data: bytes) -> NodeJoinReply:
        """Verify one join request; on success publish ``node.attested`` and store the record."""
        try:
            if len(data) > 2 * MAX_EVIDENCE_BYTES:
                raise NodeJoinRefused(f"the join request exceeds {2 * MAX_EVIDENCE_BYTES} bytes")
            try:
                request = NodeJoinRequest.model_validate_json(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(top level)"
                raise NodeJoinRefused(f"the join request is malformed: {where}: {first['msg']}") from None
            if self.admission.service.data_dir is not None:
                # A node is enrolled just before it joins; its emulated roots reach this host with the
                # enrolments, which the mirror polls only every few seconds: look now (joins are rare).
                await refresh_trusted_keys(self.admission.service.data_dir)
            verified = await asyncio.to_thread(self.admission.verify, request)
            event = Event(type=EventType.NODE_ATTESTED, workload_id=NODES_WORKLOAD,
                          source=Source(component=Component.KBS, instance=self.instance),
                          subject=Subject(node=verified.node_id),
                          payload=verified)
            await self.publish(event, event.id)
            record = NodeAttestation(**verified.model_dump(), attested_at=datetime.now(UTC), event_id=event.id)
            try:
                await self.kv.put(verified.node_id, record.model_dump_json().encode())
            except (NatsError, NatsTimeoutError, OSError) as exc:
                raise TransientError(f"storing the attestation of node {verified.node_id} failed: {exc!r}",
                                     code="attest.node.store") from exc
        except CcpipeError as exc:
            log.warning("node join refused: %s", exc.one_line())
            return NodeJoinReply(error=exc.message, code=exc.code)
        log.info("node %s attested: %s%s, TCB %s", record.node_id, record.tee.value,
                 " (emulated)" if record.emulated else "", record.tcb)
        return NodeJoinReply(record=record)


__all__ = ["NatsNodeJoin", "attested_node_keys", "node_attestations_bucket"]
