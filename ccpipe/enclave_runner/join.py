"""A runner node joins the inventory by attesting, and signs its heartbeats with the key it attested.

* The node key is an Ed25519 key kept in ``<data dir>/runner/nodes/<node id>/node.key`` (0600),
  made on first start and reused, so a restart keeps the node's identity.
* :func:`attest_node` asks the attestation service for a challenge
  (:data:`~ccpipe.schemas.nodes.CHALLENGE_SUBJECT`), makes evidence with the node's own backend
  whose report_data binds the nonce, the node id and the node key
  (:func:`~ccpipe.schemas.nodes.join_report_data`), and sends it to the instance that issued
  the challenge (``ccpipe.nodes.join.<instance>``). The service stores what it verified; the node
  learns the record (what the scheduler will place by) from the reply.
* :func:`node_signer` signs with the node key: each heartbeat (node id, time, capacity), which
  the scheduler ignores unless the attested key signed it, and each launch's KBS session (node
  id, nonce, TEE key), by which the KBS attributes key releases to this node.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from pydantic import ValidationError

from ccpipe.crypto import jose
from ccpipe.enclave_runner.errors import JoinUnavailable, NodeNotAdmitted
from ccpipe.enclave_runner.node import RunnerNode, join_backend
from ccpipe.pipeline.keyfiles import load_or_create_private_file
from ccpipe.schemas.nodes import (
    CHALLENGE_SUBJECT,
    NodeAttestation,
    NodeChallenge,
    NodeJoinReply,
    NodeJoinRequest,
    join_report_data,
)

JOIN_TIMEOUT_S = 15.0
"""How long to wait for each answer of the attestation service (verification takes milliseconds)."""

SERVICE_WAIT_S = 60.0
"""How long a starting node waits for an attestation service to subscribe at all: components
start in any order (``ccpipe serve runner`` may come up before ``ccpipe serve kbs``)."""


def node_key_path(data_dir: Path, node_id: str) -> Path:
    """Where the node's Ed25519 key is kept."""
    return data_dir / "runner" / "nodes" / node_id / "node.key"


def load_or_create_node_key(data_dir: Path, node_id: str) -> Ed25519PrivateKey:
    """The node's key (its 32-byte private seed, 0600), made on first use."""
    seed = load_or_create_private_file(node_key_path(data_dir, node_id),
                                       lambda: Ed25519PrivateKey.generate().private_bytes_raw())
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_node_key(key: Ed25519PrivateKey) -> str:
    """The public half as the join request and the record carry it (base64url, no padding)."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return jose.b64url(raw)


def node_signer(key: Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    """Signs with the node key: heartbeats (:func:`ccpipe.schemas.nodes.heartbeat_message`) and the
    node proofs of its KBS sessions (:func:`ccpipe.schemas.nodes.node_proof_message`)."""
    return key.sign


async def _ask(nc: NatsClient, subject: str, body: bytes) -> bytes:
    try:
        reply = await nc.request(subject, body, timeout=JOIN_TIMEOUT_S)
    except (NatsError, TimeoutError, OSError) as exc:
        raise JoinUnavailable(f"no attestation service answered on {subject}: {exc!r}") from exc
    return bytes(reply.data)


async def _ask_challenge(nc: NatsClient) -> bytes:
    """The challenge, waiting up to :data:`SERVICE_WAIT_S` while nobody serves the subject yet."""
    deadline = asyncio.get_running_loop().time() + SERVICE_WAIT_S
    while True:
        try:
            return await _ask(nc, CHALLENGE_SUBJECT, b"")
        except JoinUnavailable as exc:
            if not isinstance(exc.__cause__, NoRespondersError) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.5)


async def attest_node(nc: NatsClient, data_dir: Path, node: RunnerNode, key: Ed25519PrivateKey) -> NodeAttestation:
    """Join by attesting (see the module docstring); returns the record the attestation service stored.

    Raises :class:`NodeNotAdmitted` when the evidence is refused, :class:`JoinUnavailable` when
    no attestation service answers, and the backend's errors when no evidence can be made.
    """
    try:
        challenge = NodeChallenge.model_validate_json(await _ask_challenge(nc))
    except ValidationError as exc:
        raise JoinUnavailable(f"the attestation service's challenge is malformed: {exc.errors()[0]['msg']}") from exc
    node_key = public_node_key(key)
    backend = join_backend(data_dir, node)
    report_data = join_report_data(challenge.nonce, node.node_id, node_key)
    # hardware backends talk to the kernel: keep the event loop free
    result = await asyncio.to_thread(backend.get_evidence, report_data)
    request = NodeJoinRequest(node_id=node.node_id, node_key=node_key, nonce=challenge.nonce, tee=result.tee,
                              evidence=base64.b64encode(result.evidence).decode())
    try:
        # the instance that issued the nonce (its subject is under JOIN_SUBJECT, which only the KBS may serve)
        answer = await _ask(nc, challenge.join_subject, request.model_dump_json().encode())
        reply = NodeJoinReply.model_validate_json(answer)
    except ValidationError as exc:
        raise JoinUnavailable(f"the attestation service's answer is malformed: {exc.errors()[0]['msg']}") from exc
    if reply.record is None:
        raise NodeNotAdmitted(f"node {node.node_id} was refused by the attestation service: "
                              f"{reply.error or 'no reason given'} ({reply.code or '?'})")
    if reply.record.node_key != node_key or reply.record.node_id != node.node_id:
        raise NodeNotAdmitted(f"the attestation service recorded another node or key than node {node.node_id}'s")
    return reply.record


__all__ = [
    "JoinUnavailable",
    "NodeNotAdmitted",
    "attest_node",
    "load_or_create_node_key",
    "node_key_path",
    "node_signer",
    "public_node_key",
]
