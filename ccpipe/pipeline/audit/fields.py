"""What the index knows about one logged message: searchable fields pulled from its bytes. Pure.

:func:`extract` reads the canonical event bytes (never trusting them to parse) and returns
an :class:`Extracted`: the envelope columns, a one-line summary, the display ``fields`` and
the search ``terms`` — ``(kind, value)`` pairs of the kinds in :data:`TERM_KINDS`. A message
that is not a valid event is still indexed (as type ``invalid``), because the log records
what was on the bus and the index must list every leaf.

Imports ``schemas`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ccpipe.schemas.cloudevents import envelope_view, is_cloudevent
from ccpipe.schemas.envelope import SCHEMA_VERSION, Event
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType

TERM_KINDS = ("commit", "image", "key", "node", "tee", "backend", "verdict")
"""Kinds of search term; :class:`~ccpipe.pipeline.audit.query.EventFilter` has one field per kind."""
INHERITED_KINDS = ("commit", "image")
"""Kinds a workload's later events inherit: a ``key.released`` is about the image the workload
was built into and the commit it came from, though it does not repeat them."""
INVALID_TYPE = "invalid"
"""``type`` indexed for a message that is not a valid event."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch (UTC): how times are stored, so both backends sort alike."""
    delta = when.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    from datetime import timedelta

    return EPOCH + timedelta(microseconds=us)


def normalize_key(resource: str) -> str:
    """A KBS resource as ``<repo>/<type>/<tag>``: the sign stage names it ``kbs:///repo/type/tag``
    and the KBS ``repo/type/tag``; both must find the same key."""
    text = resource.strip()
    if text.startswith("kbs://"):
        text = text[len("kbs://") :]
    return text.lstrip("/")


@dataclass(frozen=True, slots=True)
class Extracted:
    """The index's view of one message."""

    event_id: str
    type: str
    workload_id: str
    occurred_at_us: int
    component: str
    summary: str
    fields: dict[str, str] = field(default_factory=dict)
    terms: tuple[tuple[str, str], ...] = ()
    source_key_id: str | None = None
    """``source.key_id`` the event names (what its signature must be by), if any."""


def _add(fields: dict[str, str], terms: list[tuple[str, str]], name: str, kind: str | None, value: Any) -> None:
    if value is None or value == "" or isinstance(value, dict | list):
        return
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "key":
        text = normalize_key(text)
    if name in fields and fields[name] != text:
        fields[f"{name}.{len(fields)}"] = text
    else:
        fields[name] = text
    if kind is not None and (kind, text) not in terms:
        terms.append((kind, text))


# Per event type: (payload field, display name, term kind), in display order. Fields are read
# from the JSON itself (no model validation: one parse per event keeps the log fast); a field
# of another shape than expected is simply not indexed. Which types are known is EventType's
# to say, not this table's: a type missing here is still indexed as itself, with no fields.
_FIELDS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "submitted": (("new_commit", "commit", "commit"), ("ref", "ref", None), ("repo", "repo", None),
                  ("pusher", "pusher", None)),
    "built": (("image_digest", "image_digest", "image"), ("provenance_digest", "provenance_digest", None)),
    "signed": (("image_digest", "image_digest", "image"), ("source_image_digest", "source_image_digest", "image"),
               ("key_resource", "key_resource", "key"), ("signature_digest", "signature_digest", None)),
    "pushed": (("image_digest", "image_digest", "image"), ("reference", "reference", None)),
    "scheduled": (("node_id", "node_id", "node"), ("tee", "tee", "tee"), ("backend", "backend", "backend")),
    "scheduling.pending": (("reason", "reason", None), ("attempt", "attempt", None)),
    "attestation.challenged": (("tee", "tee", "tee"), ("node_id", "node_id", "node"),
                               ("session_id", "session_id", None)),
    "attestation.verified": (("tee", "tee", "tee"), ("backend", "backend", "backend"),
                             ("ear_status", "verdict", "verdict"), ("evidence_digest", "evidence_digest", None),
                             ("emulated", "emulated", None), ("node_id", "node_id", "node"),
                             ("claimed_node_id", "claimed_node_id", None)),
    "attestation.rejected": (("tee", "tee", "tee"), ("backend", "backend", "backend"),
                             ("evidence_digest", "evidence_digest", None), ("node_id", "node_id", "node")),
    "key.released": (("resource", "key_resource", "key"), ("node_id", "node_id", "node"),
                     ("claimed_node_id", "claimed_node_id", None),
                     ("attestation_event_id", "attestation_event_id", None),
                     ("recipient_key_digest", "recipient_key_digest", None)),
    "key.denied": (("resource", "key_resource", "key"), ("node_id", "node_id", "node"),
                   ("claimed_node_id", "claimed_node_id", None)),
    "kbs.admin.changed": (("action", "action", None), ("target", "target", None), ("role", "role", None),
                          ("admin", "admin", None)),
    "kbs.refused": (("client", "client", None), ("kind", "kind", None), ("count", "count", None)),
    "node.attested": (("node_id", "node_id", "node"), ("tee", "tee", "tee"), ("backend", "backend", "backend"),
                      ("evidence_digest", "evidence_digest", None), ("emulated", "emulated", None)),
    "enclave.launched": (("node_id", "node_id", "node"), ("tee", "tee", "tee"), ("backend", "backend", "backend"),
                         ("launch_measurement", "launch_measurement", None)),
    "image.verified": (("node_id", "node_id", "node"), ("image_digest", "image_digest", "image"),
                       ("signer_key_digest", "signer_key_digest", None),
                       ("signer_key_resource", "key_resource", "key")),
    "image.unpacked": (("node_id", "node_id", "node"), ("image_digest", "image_digest", "image"),
                       ("plain_image_digest", "plain_image_digest", None)),
    "workload.running": (("node_id", "node_id", "node"), ("image_digest", "image_digest", "image")),
    "workload.exited": (("node_id", "node_id", "node"), ("exit_code", "exit_code", None),
                        ("output_digest", "output_digest", None)),
    "failed": (),
}
_EVENT_TYPES = frozenset(EventType)
_VERDICT = {"attestation.rejected": "rejected", "key.released": "released", "key.denied": "denied",
            "failed": "failed"}


def _d(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _summary(etype: str, p: dict[str, Any]) -> str:
    raw = p.get("reason")
    reason: dict[str, Any] = raw if isinstance(raw, dict) else {}
    match etype:
        case "submitted":
            return f"{p.get('ref')} @ {str(p.get('new_commit'))[:12]} by {p.get('pusher')}"
        case "built":
            return f"built {p.get('image_digest')}"
        case "signed":
            return f"signed {p.get('image_digest')}, key {p.get('key_resource')}"
        case "pushed":
            return f"pushed {p.get('reference')}"
        case "scheduled":
            return f"node {p.get('node_id')} ({p.get('tee')}, {p.get('backend')})"
        case "scheduling.pending":
            return f"waiting for a node (attempt {p.get('attempt')}): {p.get('reason')}"
        case "attestation.challenged":
            return f"challenge to {p.get('node_id') or '?'} ({p.get('tee')}), session {str(p.get('session_id'))[:12]}"
        case "attestation.verified":
            emulated = " (emulated)" if p.get("emulated") is True else ""
            return f"{p.get('tee')}/{p.get('backend')} {p.get('ear_status')}{emulated}"
        case "attestation.rejected":
            return f"rejected: {reason.get('code')}: {reason.get('message')}"
        case "key.released":
            claimed = f" (claimed {p['claimed_node_id']}, unproven)" if p.get("claimed_node_id") else ""
            return f"{p.get('resource')} released to {p.get('node_id') or '?'}{claimed}"
        case "key.denied":
            return f"{p.get('resource')} denied: {reason.get('code')}"
        case "kbs.admin.changed":
            return f"{p.get('action')} {p.get('target')} by {p.get('admin') or '?'} ({p.get('role')})"
        case "kbs.refused":
            return f"{p.get('count')} {p.get('kind')} request(s) from {p.get('client')} refused"
        case "node.attested":
            emulated = " (emulated)" if p.get("emulated") is True else ""
            return f"node {p.get('node_id')} joined: {p.get('tee')}/{p.get('backend')}{emulated}, TCB {p.get('tcb')}"
        case "enclave.launched":
            return f"enclave on {p.get('node_id')} ({p.get('tee')}, {p.get('backend')})"
        case "image.verified":
            return f"signature of {p.get('image_digest')} verified with {p.get('signer_key_resource')}"
        case "image.unpacked":
            return f"decrypted to {p.get('plain_image_digest')}, {p.get('entries')} entries unpacked"
        case "workload.running":
            return f"running {p.get('image_digest')} on {p.get('node_id')}"
        case "workload.exited":
            duration = p.get("duration_s")
            took = f" after {duration:.2f} s" if isinstance(duration, int | float) else ""
            return f"exit {p.get('exit_code')}{took} on {p.get('node_id')}"
        case "failed":
            return f"{reason.get('stage')}: {reason.get('message')}"
    return ""


def _invalid(data: bytes, error: str) -> Extracted:
    # Best effort on a message that did not parse: keep whatever envelope fields are there.
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        obj = None
    obj = obj if isinstance(obj, dict) else {}
    source = obj.get("source") if isinstance(obj.get("source"), dict) else {}
    # a CloudEvent names its workload in ``subject``; the legacy envelope in ``workload_id``
    eid, wl = obj.get("id"), obj.get("subject") if is_cloudevent(obj) else obj.get("workload_id")
    comp = source.get("component") if isinstance(source, dict) else None
    return Extracted(
        event_id=eid if isinstance(eid, str) else "",
        type=INVALID_TYPE,
        workload_id=wl if isinstance(wl, str) else "",
        occurred_at_us=0,
        component=comp if isinstance(comp, str) else "",
        summary=f"not a valid event: {error}"[:300],
        fields={"error": error[:300]},
    )


def _envelope_problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "not a JSON object"
    for key in ("id", "type", "workload_id", "occurred_at"):
        if not isinstance(obj.get(key), str):
            return f"envelope field {key!r} is missing or not a string"
    if obj["type"] not in _EVENT_TYPES:
        return f"event type {obj['type']!r} is not known"
    if obj.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:  # a CloudEvent has none, as Event defaults
        return f"schema_version {obj.get('schema_version')!r} is not {SCHEMA_VERSION}"
    if not isinstance(_d(obj.get("source"), "component"), str):
        return "source.component is missing"
    if not isinstance(obj.get("payload"), dict):
        return "payload is not an object"
    return None


def extract(data: bytes) -> Extracted:
    """The index's view of the message ``data``; never raises.

    The envelope is checked (a message without ``id``, a known ``type``, ``workload_id``,
    ``occurred_at``, ``source.component`` and an object ``payload`` is indexed as
    :data:`INVALID_TYPE`); payload fields are read as they are, not validated.
    """
    try:
        obj = envelope_view(json.loads(data))  # a CloudEvent, or an envelope logged before them
    except (ValueError, UnicodeDecodeError) as exc:
        return _invalid(data, f"not JSON: {exc}")
    except InvalidInput as exc:
        return _invalid(data, exc.message)
    problem = _envelope_problem(obj)
    if problem is None:
        try:
            occurred = to_micros(datetime.fromisoformat(obj["occurred_at"].replace("Z", "+00:00")))
        except (ValueError, TypeError):
            problem = f"occurred_at {obj['occurred_at']!r} is not an ISO 8601 time with a zone"
    if problem is not None:
        return _invalid(data, problem)
    etype, p = obj["type"], obj["payload"]
    f: dict[str, str] = {}
    t: list[tuple[str, str]] = []
    for field_name, name, kind in _FIELDS.get(etype, ()):
        _add(f, t, name, kind, p.get(field_name))
    evidence = p.get("runner_evidence")
    if etype == "built" and isinstance(evidence, dict):
        _add(f, t, "tee", "tee", evidence.get("tee"))
        _add(f, t, "backend", "backend", evidence.get("backend"))
    if etype in _VERDICT:
        _add(f, t, "verdict", "verdict", _VERDICT[etype])
    reason = p.get("reason")
    if isinstance(reason, dict):
        _add(f, t, "reason", None, reason.get("code"))
    raw = obj.get("subject")
    subject: dict[str, Any] = raw if isinstance(raw, dict) else {}
    _add(f, t, "commit", "commit", subject.get("commit"))
    _add(f, t, "image_digest", "image", subject.get("image_digest"))
    _add(f, t, "key_resource", "key", subject.get("key_id"))
    _add(f, t, "node_id", "node", subject.get("node"))
    return Extracted(
        event_id=obj["id"], type=etype, workload_id=obj["workload_id"], occurred_at_us=occurred,
        component=obj["source"]["component"], summary=_summary(etype, p), fields=f, terms=tuple(t),
        source_key_id=kid if isinstance(kid := obj["source"].get("key_id"), str) else None,
    )


def extract_event(event: Event) -> Extracted:
    """The index's view of a parsed event (what it would be once published)."""
    return extract(event.canonical_bytes())
