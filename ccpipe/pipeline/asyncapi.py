"""The AsyncAPI 3.0 document of every subject, built from the code so it cannot drift.

Channels and messages come from the contract's tables: one channel and one message per
:class:`~ccpipe.schemas.events.EventType` (its payload schema from ``PAYLOAD_MODELS``, its
CloudEvents ``type`` from ``CLOUDEVENT_TYPES``), a send operation per entry of the emitter
table, a receive operation per consumer; then the audit log's checkpoint and status subjects,
the KBS's RCAR request/reply subjects, the node-join request/reply subjects the KBS process also
answers, and the node announcements (subject names from :mod:`ccpipe.pipeline.nats_auth` and
:mod:`ccpipe.schemas.nodes`). Schemas are pydantic's, gathered under
``components.schemas``. Every key matches AsyncAPI's ``^[A-Za-z0-9\\.\\-_]+$``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.nats_auth import AUDIT_CHECKPOINTS, AUDIT_STATUS, KBS_SUBJECTS, NODES
from ccpipe.schemas.cloudevent_wire import STRUCTURED_CONTENT_TYPE
from ccpipe.schemas.cloudevents import CLOUDEVENT_TYPES, CloudEvent
from ccpipe.schemas.emitters import EMITTERS
from ccpipe.schemas.envelope import SUBJECT_PREFIX
from ccpipe.schemas.events import PAYLOAD_MODELS, EventType
from ccpipe.schemas.kbs import AttestationToken, Challenge, ErrorInformation, FlattenedJwe, KbsRequest
from ccpipe.schemas.nodes import (
    CHALLENGE_SUBJECT,
    JOIN_QUEUE,
    JOIN_SUBJECT,
    NodeChallenge,
    NodeJoinReply,
    NodeJoinRequest,
)
from ccpipe.stages.deploy.inventory import NodeAnnouncement

ASYNCAPI_VERSION = "3.0.0"
_REF = "#/components/schemas/{model}"

Consumer = tuple[str, EventType | None]
"""(who, the event type it consumes; None for every type)."""

EVENT_CONSUMERS_BESIDE_STAGES: tuple[Consumer, ...] = (
    ("runner", EventType.SCHEDULED),  # each node's durable ``runner-<node id>``
    ("audit", None),  # the audit log reads the whole trail
)
"""Consumers of events that are not stage specs."""

_KBS_REPLIES: dict[str, type[BaseModel]] = {"auth": Challenge, "attest": AttestationToken, "resource": FlattenedJwe}
_KBS_REQUESTS: dict[str, type[BaseModel] | None] = {"auth": KbsRequest, "attest": None, "resource": None}
_NODE_JOIN_MODELS: tuple[type[BaseModel], ...] = (NodeChallenge, NodeJoinRequest, NodeJoinReply)


def _schemas(models: Iterable[type[BaseModel]]) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """One ``$ref`` per model and every definition, under ``components.schemas``."""
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    return {cast(type[BaseModel], model): ref for (model, _), ref in refs.items()}, top.get("$defs", {})


def _event_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            SIGNATURE_HEADER: {"type": "string", "description": "<key id>:<base64 Ed25519 signature> of the body."},
            "Nats-Msg-Id": {"type": "string", "description": "JetStream de-duplication id."},
            "Ccpipe-Event-Id": {"type": "string", "description": "The event's id."},
            "Content-Type": {"type": "string", "const": STRUCTURED_CONTENT_TYPE},
        },
        "required": [SIGNATURE_HEADER, "Nats-Msg-Id"],
    }


def _event_parts(refs: dict[type[BaseModel], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(channels, messages) of the event types."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for etype, model in PAYLOAD_MODELS.items():
        name = etype.value
        emitters = ", ".join(sorted(EMITTERS[etype]))
        messages[name] = {
            "name": name,
            "title": f"{name} ({CLOUDEVENT_TYPES[etype]})",
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": STRUCTURED_CONTENT_TYPE,
            "headers": _event_headers(),
            "payload": {"allOf": [
                refs[CloudEvent],
                {"type": "object", "required": ["data"], "properties": {
                    "type": {"const": CLOUDEVENT_TYPES[etype]}, "data": refs[model]}},
            ]},
        }
        channels[f"events.{name}"] = {
            "address": f"{SUBJECT_PREFIX}.{{workload_id}}.{name}",
            "title": name,
            "description": f"`{name}` events, stored in the JetStream stream CCPIPE_EVENTS; emitted by {emitters}.",
            "parameters": {"workload_id": {"description": "The workload id (one subject token)."}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
    return channels, messages


def _other_parts(refs: dict[type[BaseModel], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(channels, messages) of the audit, KBS and node subjects."""
    text = {"type": "string"}
    messages: dict[str, Any] = {
        "audit.checkpoint": {"name": "audit.checkpoint", "contentType": "text/plain", "payload": text,
                             "summary": "A signed checkpoint of the audit log (C2SP tlog-checkpoint note)."},
        "audit.status": {"name": "audit.status", "contentType": "application/json", "payload": {"type": "object"},
                         "summary": "The audit log service's status."},
        "node.announcement": {"name": "node.announcement", "contentType": "application/json",
                              "payload": refs[NodeAnnouncement],
                              "summary": "A runner node's announcement and heartbeat (KV bucket CCPIPE_NODES)."},
        "kbs.error": {"name": "kbs.error", "contentType": "application/json", "payload": refs[ErrorInformation],
                      "summary": "A refusal (Trustee's error body); header Kbs-Status carries the HTTP status."},
    }
    channels: dict[str, Any] = {
        "audit.checkpoint": {"address": AUDIT_CHECKPOINTS, "description": "Stream CCPIPE_AUDIT.",
                             "messages": {"audit.checkpoint": {"$ref": "#/components/messages/audit.checkpoint"}}},
        "audit.status": {"address": AUDIT_STATUS, "description": "Stream CCPIPE_AUDIT.",
                         "messages": {"audit.status": {"$ref": "#/components/messages/audit.status"}}},
        "nodes": {"address": f"$KV.{NODES}.{{node_id}}", "description": "The node inventory (a KV bucket).",
                  "parameters": {"node_id": {"description": "The node id (the KV key)."}},
                  "messages": {"node.announcement": {"$ref": "#/components/messages/node.announcement"}}},
    }
    for subject in KBS_SUBJECTS:
        op = subject.rsplit(".", 1)[-1]
        request_model = _KBS_REQUESTS[op]
        messages[f"kbs.{op}.request"] = {
            "name": f"kbs.{op}.request", "contentType": "application/json",
            "payload": refs[request_model] if request_model is not None else {"type": "object"},
            "summary": f"RCAR {op} request (the HTTP body; Kbs-Session, Authorization, Kbs-Path headers).",
        }
        messages[f"kbs.{op}.reply"] = {
            "name": f"kbs.{op}.reply", "contentType": "application/json", "payload": refs[_KBS_REPLIES[op]],
            "summary": f"RCAR {op} reply (header Kbs-Status = 200).",
        }
        channels[f"kbs.{op}"] = {
            "address": subject, "description": f"RCAR {op} over NATS request/reply (queue group ccpipe-kbs).",
            "messages": {f"kbs.{op}.request": {"$ref": f"#/components/messages/kbs.{op}.request"}},
        }
        channels[f"kbs.{op}.reply"] = {
            "address": None, "description": f"The requester's inbox for {op} replies.",
            "messages": {f"kbs.{op}.reply": {"$ref": f"#/components/messages/kbs.{op}.reply"},
                         "kbs.error": {"$ref": "#/components/messages/kbs.error"}},
        }
    node_channels, node_messages = _node_join_parts(refs)
    return {**channels, **node_channels}, {**messages, **node_messages}


def _node_join_parts(refs: dict[type[BaseModel], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(channels, messages) of a runner node's admission: a challenge, then its evidence, both request/reply."""
    def message(name: str, payload: dict[str, Any], summary: str) -> dict[str, Any]:
        return {"name": name, "contentType": "application/json", "payload": payload, "summary": summary}

    def ref(name: str) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/messages/{name}"}}

    messages = {
        "nodes.challenge.request": message("nodes.challenge.request", {"type": "string", "maxLength": 0},
                                           "A node asks for a join challenge (an empty body)."),
        "nodes.challenge.reply": message("nodes.challenge.reply", refs[NodeChallenge],
                                         "A fresh nonce and the subject of the instance that issued it."),
        "nodes.join.request": message("nodes.join.request", refs[NodeJoinRequest],
                                      "The node's TEE evidence binding the nonce, its node id and its node key."),
        "nodes.join.reply": message("nodes.join.reply", refs[NodeJoinReply],
                                    "The stored node attestation, or why the node was refused."),
    }
    channels = {
        "nodes.challenge": {"address": CHALLENGE_SUBJECT,
                            "description": f"Node admission: challenges (queue group {JOIN_QUEUE}, any instance).",
                            "messages": ref("nodes.challenge.request")},
        "nodes.challenge.reply": {"address": None, "description": "The node's inbox for the challenge.",
                                  "messages": ref("nodes.challenge.reply")},
        "nodes.join": {"address": f"{JOIN_SUBJECT}.{{instance}}",
                       "description": "Node admission: the evidence, sent to the instance named in its challenge "
                                      "(the one that spends the nonce).",
                       "parameters": {"instance": {"description": "The issuing instance's token."}},
                       "messages": ref("nodes.join.request")},
        "nodes.join.reply": {"address": None, "description": "The node's inbox for the verdict.",
                             "messages": ref("nodes.join.reply")},
    }
    return channels, messages


def _op(action: str, channel: str, messages: Iterable[str], summary: str) -> dict[str, Any]:
    return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages]}


def _operations(stage_consumers: Iterable[Consumer]) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for etype, who in EMITTERS.items():
        for component in sorted(who):
            ops[f"{component}.send.{etype.value}"] = _op("send", f"events.{etype.value}", [etype.value],
                                                          f"{component} emits {etype.value}")
    for consumer, consumed in (*stage_consumers, *EVENT_CONSUMERS_BESIDE_STAGES):
        for etype in (consumed,) if consumed is not None else tuple(EventType):
            ops[f"{consumer}.receive.{etype.value}"] = _op("receive", f"events.{etype.value}", [etype.value],
                                                            f"{consumer} consumes {etype.value}")
    ops["audit.send.checkpoint"] = _op("send", "audit.checkpoint", ["audit.checkpoint"], "the audit log signs")
    ops["audit.send.status"] = _op("send", "audit.status", ["audit.status"], "the audit log reports")
    ops["runner.send.announcement"] = _op("send", "nodes", ["node.announcement"], "a node announces itself")
    ops["schedule.receive.announcement"] = _op("receive", "nodes", ["node.announcement"], "the scheduler watches")
    for subject in KBS_SUBJECTS:
        op = subject.rsplit(".", 1)[-1]
        ops[f"kbs.receive.{op}"] = {
            **_op("receive", f"kbs.{op}", [f"kbs.{op}.request"], f"the KBS answers RCAR {op}"),
            "reply": {"channel": {"$ref": f"#/channels/kbs.{op}.reply"},
                      "messages": [{"$ref": f"#/channels/kbs.{op}.reply/messages/{m}"}
                                   for m in (f"kbs.{op}.reply", "kbs.error")]},
        }
    for step in ("challenge", "join"):
        ops[f"kbs.receive.nodes.{step}"] = {
            **_op("receive", f"nodes.{step}", [f"nodes.{step}.request"], f"the KBS process answers node {step}s"),
            "reply": {"channel": {"$ref": f"#/channels/nodes.{step}.reply"},
                      "messages": [{"$ref": f"#/channels/nodes.{step}.reply/messages/nodes.{step}.reply"}]},
        }
        ops[f"runner.send.nodes.{step}"] = {
            **_op("send", f"nodes.{step}", [f"nodes.{step}.request"], f"a runner node asks to join ({step})"),
            "reply": {"channel": {"$ref": f"#/channels/nodes.{step}.reply"},
                      "messages": [{"$ref": f"#/channels/nodes.{step}.reply/messages/nodes.{step}.reply"}]},
        }
    return ops


def asyncapi_document(version: str, nats_url: str, stage_consumers: Iterable[Consumer]) -> dict[str, Any]:
    """The whole AsyncAPI document; ``stage_consumers`` = (stage name, input type) of each stage."""
    models: list[type[BaseModel]] = [CloudEvent, *PAYLOAD_MODELS.values(), NodeAnnouncement, ErrorInformation,
                                     *_KBS_REPLIES.values(), *(m for m in _KBS_REQUESTS.values() if m is not None),
                                     *_NODE_JOIN_MODELS]
    refs, schemas = _schemas(models)
    event_channels, event_messages = _event_parts(refs)
    other_channels, other_messages = _other_parts(refs)
    host = nats_url.split("://", 1)[-1].split(",", 1)[0]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ccpipe events",
            "version": version,
            "description": (
                "Every subject of the ccpipe bus. Events are CloudEvents 1.0 in structured JSON mode "
                f"({STRUCTURED_CONTENT_TYPE}) on {SUBJECT_PREFIX}.<workload_id>.<type>, stored in the JetStream "
                "stream CCPIPE_EVENTS (file storage, deny_delete, deny_purge) and signed by their emitter."
            ),
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "servers": {"nats": {"host": host, "protocol": "nats"}},
        "channels": {**event_channels, **other_channels},
        "operations": _operations(stage_consumers),
        "components": {"schemas": schemas, "messages": {**event_messages, **other_messages}},
    }
