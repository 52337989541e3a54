"""The event shared by every message on ``ccpipe.evt.>``, as the code works with it.

On the wire each event is a CloudEvent (:mod:`ccpipe.schemas.cloudevents`). An event is
parsed once with :meth:`Event.from_wire`, which reads that form (and the envelope ccpipe
published before it, still found in older logs) and turns any problem (bad JSON, unknown
``type``, a bad field) into an :class:`InvalidInput` that names it. Its canonical bytes
(:meth:`Event.canonical_bytes`, RFC 8785 of the CloudEvent) are what is published, hashed
and signed.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import uuid6
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.cloudevents import envelope_view, to_cloudevent
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import PAYLOAD_MODELS, EventType, Payload
from ccpipe.schemas.json_input import load_json
from ccpipe.schemas.workload import describe_validation_error

SCHEMA_VERSION = 1
SUBJECT_PREFIX = "ccpipe.evt"
_WORKLOAD_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def check_workload_id(value: str) -> str:
    """``value`` if it can be a workload id (one NATS subject token); raises :class:`InvalidInput`."""
    if not _WORKLOAD_ID_RE.match(value):
        raise InvalidInput(
            f"{value!r} is not a workload id",
            hint="workload ids are lower-case letters, digits and '-' (like hello-0123456789); "
                 "list them with 'ccpipe events'",
            code="workload_id.invalid",
        )
    return value


class Source(BaseModel):
    """Who emitted the event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str = Field(description="Stage or component: submit, build, sign, deploy, attest, runner, audit.")
    instance: str = Field(default="", description="Which replica or node (host name, node id).")
    key_id: str | None = Field(default=None, description="Id of the key that signs this component's events.")


class Subject(BaseModel):
    """What the event is about; every field is optional and indexed by the audit trail."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit: str | None = None
    image_digest: str | None = None
    key_id: str | None = Field(default=None, description="KBS resource path or key id.")
    node: str | None = None


def new_event_id() -> str:
    """A fresh UUIDv7 (time-ordered) as a string."""
    return str(uuid6.uuid7())


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class Event(BaseModel):
    """One event of the flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this envelope schema.")
    id: str = Field(default_factory=new_event_id, description="UUIDv7 of the event.")
    type: EventType = Field(description="Dotted event type, e.g. key.released.")
    workload_id: str = Field(description="Workload the event belongs to; one NATS subject token.")
    occurred_at: datetime = Field(default_factory=utc_now, description="When it happened (UTC).")
    source: Source
    subject: Subject = Field(default_factory=Subject)
    causation_id: str | None = Field(default=None, description="Id of the event that caused this one.")
    payload: Payload = Field(description="Typed per `type` (see ccpipe.schemas.events.PAYLOAD_MODELS).")

    @field_validator("workload_id")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _WORKLOAD_ID_RE.match(v):
            raise ValueError("must be lower-case letters, digits and '-' (one NATS subject token)")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a time zone (UTC)")
        return v.astimezone(UTC)

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise InvalidInput(
                f"event schema_version {version!r} is not supported (this ccpipe reads version {SCHEMA_VERSION})",
                hint="upgrade ccpipe, or publish events with the schema version it reads",
                code="event.schema_version.unknown",
            )
        raw_type = data.get("type")
        try:
            etype = EventType(str(raw_type))
        except ValueError:
            known = ", ".join(t.value for t in EventType)
            raise InvalidInput(
                f"event type {raw_type!r} is not known (known: {known})",
                hint="check the publisher; only the listed types exist in this schema version",
                code="event.type.unknown",
            ) from None
        model = PAYLOAD_MODELS[etype]
        payload = data.get("payload")
        if not isinstance(payload, model):
            try:
                data = {**data, "payload": model.model_validate(payload)}
            except ValidationError as exc:
                raise describe_validation_error(exc, f"event of type {etype.value!r}", prefix="payload") from exc
        return data

    @property
    def nats_subject(self) -> str:
        """``ccpipe.evt.<workload_id>.<type>``."""
        return subject_for(self.workload_id, self.type)

    def to_cloudevent(self) -> dict[str, Any]:
        """The event as a CloudEvent (JSON format, decoded): its wire form."""
        return to_cloudevent(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    def canonical_bytes(self) -> bytes:
        """RFC 8785 bytes of the CloudEvent: what is published, hashed by the audit log and signed."""
        return canonical_json(self.to_cloudevent())

    def digest(self) -> str:
        """SHA-256 hex of the canonical bytes."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @classmethod
    def from_wire(cls, data: bytes | str | dict[str, Any]) -> Event:
        """Parse an event from bytes, text or decoded JSON: a CloudEvent, or a legacy envelope.

        Raises :class:`InvalidInput` (never a bare ``ValueError``) naming what was wrong.
        """
        if isinstance(data, bytes | str):
            try:
                data = load_json(data)
            except ValueError as exc:  # not JSON, not UTF-8, or nested too deeply
                raise InvalidInput(f"event is not JSON: {exc}", code="event.json") from exc
        if not isinstance(data, dict):
            raise InvalidInput("event is not a JSON object", code="event.json")
        view: dict[str, Any] = envelope_view(data)
        try:
            return cls.model_validate(view)
        except InvalidInput:
            raise
        except ValidationError as exc:
            # Our own InvalidInput raised inside a validator arrives wrapped.
            for err in exc.errors():
                ctx_err = (err.get("ctx") or {}).get("error")
                if isinstance(ctx_err, InvalidInput):
                    raise ctx_err from exc
            raise describe_validation_error(exc, f"event of type {view.get('type')!r}") from exc


def subject_for(workload_id: str, event_type: EventType | str) -> str:
    """The NATS subject of an event."""
    return f"{SUBJECT_PREFIX}.{workload_id}.{EventType(event_type).value}"


def input_filter(event_type: EventType | str) -> str:
    """The consumer filter subject that selects one event type across all workloads."""
    return f"{SUBJECT_PREFIX}.*.{EventType(event_type).value}"


def derived_msg_id(workload_id: str, output_type: EventType | str, input_event_id: str) -> str:
    """Deterministic ``Nats-Msg-Id`` for a stage output: a redelivered input yields the same id."""
    material = f"{workload_id}\x00{EventType(output_type).value}\x00{input_event_id}".encode()
    return hashlib.sha256(material).hexdigest()
