"""How a runner node joins: the messages it exchanges with the attestation service, and what is bound.

A node joins by attesting (issue 19, item 2):

1. it asks for a challenge on :data:`CHALLENGE_SUBJECT` and gets a fresh nonce and the subject
   of the service instance that issued it (:class:`NodeChallenge`);
2. it makes TEE evidence whose report_data is :func:`join_report_data` (the nonce, its node id
   and its Ed25519 node key) and sends it on that subject, under :data:`JOIN_SUBJECT`
   (:class:`NodeJoinRequest`): the instance that issued a nonce is the one that spends it;
3. the attestation service verifies the evidence and the binding, stores a :class:`NodeAttestation`
   under the node id in :data:`NODE_ATTESTATIONS_BUCKET` (which only it may write), publishes
   ``node.attested`` and answers :class:`NodeJoinReply`.

Each heartbeat then carries the node key's signature over :func:`heartbeat_message`; the
scheduler places work only on nodes with a record and a heartbeat the recorded key signed,
using the record's TEE type, backend and TCB.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.events import NodeAttested
from ccpipe.schemas.spec_rules import TeeType

NODE_ATTESTATIONS_BUCKET = "CCPIPE_NODE_ATTESTATIONS"
"""KV bucket: node id → :class:`NodeAttestation` (written only by the attestation service)."""
CHALLENGE_SUBJECT = "ccpipe.nodes.challenge"
"""Where a node asks for a challenge (queue group :data:`JOIN_QUEUE`: any instance may answer)."""
JOIN_SUBJECT = "ccpipe.nodes.join"
"""Prefix of each service instance's own join subject, ``ccpipe.nodes.join.<instance>``."""
JOIN_SUBJECTS = (CHALLENGE_SUBJECT, f"{JOIN_SUBJECT}.*")
"""Every node-join subject (what the attestation service subscribes to and a runner may request)."""
JOIN_QUEUE = "ccpipe-node-join"
NODES_WORKLOAD = "ccpipe-nodes"
"""The workload id of ``node.attested`` events (they belong to no workload)."""
JOIN_HASH = "sha384"
NODE_ID_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
"""A node id: lower-case DNS-label-like, also a valid NATS KV key and subject token."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeChallenge(_Message):
    """A fresh nonce to bind into the node's join evidence."""

    nonce: str = Field(description="Opaque; valid once, until ``expires_at``.")
    expires_at: datetime
    join_subject: str = Field(pattern=r"^ccpipe\.nodes\.join\.[A-Za-z0-9_-]+$",
                              description="Where to send the join request: the instance that issued the nonce.")


class NodeJoinRequest(_Message):
    """A node's evidence for one challenge."""

    node_id: NodeId
    node_key: str = Field(description="Its Ed25519 public key, base64url (32 bytes).")
    nonce: str
    tee: TeeType = Field(description="Which verifier to run; the record holds the type the evidence proves.")
    evidence: str = Field(description="Base64 of the evidence JSON (Trustee's primary evidence for the TEE).")


class NodeJoinReply(_Message):
    """The attestation service's answer: the stored record, or why the node was refused."""

    record: NodeAttestation | None = None
    error: str | None = None
    code: str | None = None


class NodeAttestation(NodeAttested):
    """The record of a node's last successful attestation (the ``node.attested`` payload, and when)."""

    attested_at: datetime
    event_id: str = Field(description="The ``node.attested`` event that announced it.")


NodeJoinReply.model_rebuild()


def join_report_data(nonce: str, node_id: str, node_key: str) -> bytes:
    """The report_data of join evidence: SHA-384 of the canonical JSON of nonce, node id and node key.

    Binding the key means evidence shows this key is held inside the attested TEE; binding the
    nonce means it was made for this challenge, not replayed.
    """
    bound = {"ccpipe-node-id": node_id, "node-key": node_key, "nonce": nonce}
    return hashlib.new(JOIN_HASH, canonical_json(bound)).digest()


def node_proof_message(node_id: str, nonce: str, tee_pubkey: dict[str, Any]) -> bytes:
    """What a runner's node proof to the KBS signs: its node id, the session's nonce, the TEE key.

    The nonce makes the proof good for one RCAR session only; the TEE key ties it to the
    enclave whose evidence that session verifies (its report_data binds the same key).
    """
    return canonical_json({"ccpipe-node-id": node_id, "nonce": nonce, "tee-pubkey": tee_pubkey})


def heartbeat_message(node_id: str, sent_at: datetime, total: int, free: int) -> bytes:
    """What a heartbeat's signature covers: node id, when it was sent, its capacity."""
    return canonical_json({"node_id": node_id, "sent_at": sent_at.isoformat(), "capacity": {"total": total,
                                                                                             "free": free}})


__all__ = [
    "CHALLENGE_SUBJECT",
    "JOIN_QUEUE",
    "JOIN_SUBJECT",
    "JOIN_SUBJECTS",
    "NODES_WORKLOAD",
    "NODE_ATTESTATIONS_BUCKET",
    "NODE_ID_PATTERN",
    "NodeAttestation",
    "NodeChallenge",
    "NodeId",
    "NodeJoinReply",
    "NodeJoinRequest",
    "heartbeat_message",
    "join_report_data",
    "node_proof_message",
]
