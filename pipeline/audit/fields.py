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

from schemas import events as ev
from schemas.envelope import Event
from schemas.errors import InvalidInput

TERM_KINDS = ("commit", "image", "key", "node", "tee", "backend", "verdict")
"""Kinds of search term; :class:`~pipeline.audit.query.EventFilter` has one field per kind."""
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


def _add(fields: dict[str, str], terms: list[tuple[str, str]], name: str, kind: str | None, value: Any) -> None:
    if value is None or value == "":
        return
    text = value.value if hasattr(value, "value") else str(value)
    if kind == "key":
        text = normalize_key(text)
    if name in fields and fields[name] != text:
        fields[f"{name}.{len(fields)}"] = text
    else:
        fields[name] = text
    if kind is not None and (kind, text) not in terms:
        terms.append((kind, text))


def _payload_fields(p: Any, f: dict[str, str], t: list[tuple[str, str]]) -> str:
    match p:
        case ev.Submitted():
            _add(f, t, "commit", "commit", p.new_commit)
            _add(f, t, "ref", None, p.ref)
            _add(f, t, "repo", None, p.repo)
            _add(f, t, "pusher", None, p.pusher)
            return f"{p.ref} @ {p.new_commit[:12]} by {p.pusher}"
        case ev.Built():
            _add(f, t, "image_digest", "image", p.image_digest)
            _add(f, t, "provenance_digest", None, p.provenance_digest)
            _add(f, t, "tee", "tee", p.runner_evidence.tee)
            _add(f, t, "backend", "backend", p.runner_evidence.backend)
            return f"built {p.image_digest}"
        case ev.Signed():
            _add(f, t, "image_digest", "image", p.image_digest)
            _add(f, t, "source_image_digest", "image", p.source_image_digest)
            _add(f, t, "key_resource", "key", p.key_resource)
            _add(f, t, "signature_digest", None, p.signature_digest)
            return f"signed {p.image_digest}, key {p.key_resource}"
        case ev.Pushed():
            _add(f, t, "image_digest", "image", p.image_digest)
            _add(f, t, "reference", None, p.reference)
            return f"pushed {p.reference}"
        case ev.Scheduled():
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "tee", "tee", p.tee)
            _add(f, t, "backend", "backend", p.backend)
            return f"node {p.node_id} ({p.tee.value}, {p.backend})"
        case ev.AttestationVerified():
            _add(f, t, "tee", "tee", p.tee)
            _add(f, t, "backend", "backend", p.backend)
            _add(f, t, "verdict", "verdict", p.ear_status)
            _add(f, t, "evidence_digest", None, p.evidence_digest)
            _add(f, t, "emulated", None, str(p.emulated).lower())
            return f"{p.tee.value}/{p.backend} {p.ear_status}" + (" (emulated)" if p.emulated else "")
        case ev.AttestationRejected():
            _add(f, t, "tee", "tee", p.tee)
            _add(f, t, "backend", "backend", p.backend)
            _add(f, t, "verdict", "verdict", "rejected")
            _add(f, t, "reason", None, p.reason.code)
            return f"rejected: {p.reason.code}: {p.reason.message}"
        case ev.KeyReleased():
            _add(f, t, "key_resource", "key", p.resource)
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "verdict", "verdict", "released")
            _add(f, t, "attestation_event_id", None, p.attestation_event_id)
            _add(f, t, "recipient_key_digest", None, p.recipient_key_digest)
            return f"{p.resource} released to {p.node_id or '?'}"
        case ev.KeyDenied():
            _add(f, t, "key_resource", "key", p.resource)
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "verdict", "verdict", "denied")
            _add(f, t, "reason", None, p.reason.code)
            return f"{p.resource} denied: {p.reason.code}"
        case ev.EnclaveLaunched():
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "tee", "tee", p.tee)
            _add(f, t, "backend", "backend", p.backend)
            _add(f, t, "launch_measurement", None, p.launch_measurement)
            return f"enclave on {p.node_id} ({p.tee.value}, {p.backend})"
        case ev.WorkloadRunning():
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "image_digest", "image", p.image_digest)
            return f"running {p.image_digest} on {p.node_id}"
        case ev.WorkloadExited():
            _add(f, t, "node_id", "node", p.node_id)
            _add(f, t, "exit_code", None, p.exit_code)
            _add(f, t, "output_digest", None, p.output_digest)
            return f"exit {p.exit_code} after {p.duration_s:.2f} s on {p.node_id}"
        case ev.Failed():
            _add(f, t, "verdict", "verdict", "failed")
            _add(f, t, "reason", None, p.reason.code)
            return f"{p.reason.stage}: {p.reason.message}"
    return ""


def _invalid(data: bytes, error: str) -> Extracted:
    # Best effort on a message that did not parse: keep whatever envelope fields are there.
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        obj = None
    obj = obj if isinstance(obj, dict) else {}
    source = obj.get("source") if isinstance(obj.get("source"), dict) else {}
    eid, wl = obj.get("id"), obj.get("workload_id")
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


def extract(data: bytes) -> Extracted:
    """The index's view of the message ``data``; never raises."""
    try:
        event = Event.from_wire(data)
    except InvalidInput as exc:
        return _invalid(data, exc.one_line())
    return extract_event(event)


def extract_event(event: Event) -> Extracted:
    """The index's view of a parsed event."""
    f: dict[str, str] = {}
    t: list[tuple[str, str]] = []
    s = event.subject
    summary = _payload_fields(event.payload, f, t)
    _add(f, t, "commit", "commit", s.commit)
    _add(f, t, "image_digest", "image", s.image_digest)
    _add(f, t, "key_resource", "key", s.key_id)
    _add(f, t, "node_id", "node", s.node)
    return Extracted(
        event_id=event.id,
        type=event.type.value,
        workload_id=event.workload_id,
        occurred_at_us=to_micros(event.occurred_at),
        component=event.source.component,
        summary=summary,
        fields=f,
        terms=tuple(t),
    )
