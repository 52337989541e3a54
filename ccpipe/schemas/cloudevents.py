"""The wire form of an event: a CloudEvents 1.0 event in structured JSON mode.

Each message on ``ccpipe.evt.>`` is one CloudEvent, serialized with the JSON event format
and then canonicalized (RFC 8785): those bytes are published, signed and hashed into the
audit log. Structured mode keeps every attribute inside the signed, hashed bytes; binary
mode would move them into NATS headers, which neither the signature nor the Merkle leaf
covers (``docs/design/cloudevents.md``).

The mapping to :class:`ccpipe.schemas.envelope.Event` (what the code works with):

=================  ===========================================================
CloudEvents        Event
=================  ===========================================================
``specversion``    always ``"1.0"``
``id``             ``id``
``source``         ``/ccpipe/<component>[/<instance>]`` (percent-encoded)
``type``           :data:`CLOUDEVENT_TYPES` of ``type`` (CDEvents where one exists)
``subject``        ``workload_id``
``time``           ``occurred_at``
``datacontenttype``  always ``"application/json"``
``data``           ``payload``
``correlationid``  ``workload_id`` (the correlation extension: one flow per workload)
``causationid``    ``causation_id`` (the correlation extension)
``signerkeyid``    ``source.key_id``
``commit``, ``imagedigest``, ``keyresource``, ``node``  the fields of ``subject``
=================  ===========================================================

Events published before this form (ccpipe's own envelope, ``schema_version`` 1) are still
read: :func:`envelope_view` turns either form into the envelope's field layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from ccpipe.schemas.cloudevent_wire import DATA_CONTENT_TYPE, SOURCE_PREFIX, SPEC_VERSION, source_uri
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType

CCPIPE_TYPE_PREFIX = "dev.ccpipe."
"""Reverse-DNS prefix of ccpipe's own types (those with no CDEvents counterpart)."""

_CDEVENTS_TYPES: Mapping[EventType, str] = {
    # CDEvents 0.4 vocabulary; the version suffix is the event's CDEvents schema version.
    EventType.SUBMITTED: "dev.cdevents.build.queued.0.2.0",
    EventType.BUILT: "dev.cdevents.build.finished.0.2.0",
    EventType.SIGNED: "dev.cdevents.artifact.signed.0.1.0",
    EventType.PUSHED: "dev.cdevents.artifact.published.0.2.0",
    EventType.SCHEDULED: "dev.cdevents.service.deployed.0.2.0",
}

CLOUDEVENT_TYPES: Mapping[EventType, str] = MappingProxyType({
    etype: _CDEVENTS_TYPES.get(etype, CCPIPE_TYPE_PREFIX + etype.value) for etype in EventType
})
"""ccpipe event type → CloudEvents ``type`` (one-to-one)."""
EVENT_TYPES_BY_CLOUDEVENT_TYPE: Mapping[str, EventType] = MappingProxyType(
    {ce: etype for etype, ce in CLOUDEVENT_TYPES.items()}
)
"""CloudEvents ``type`` → ccpipe event type."""

_SUBJECT_EXTENSIONS = (("commit", "commit"), ("image_digest", "imagedigest"), ("key_id", "keyresource"),
                       ("node", "node"))
"""(field of the envelope's ``subject``, extension attribute carrying it)."""
_CONTEXT_ATTRIBUTES = frozenset({"specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                                 "data", "correlationid", "causationid", "signerkeyid"}
                                | {ext for _, ext in _SUBJECT_EXTENSIONS})


def cloudevent_type(event_type: EventType | str) -> str:
    """The CloudEvents ``type`` of a ccpipe event type."""
    return CLOUDEVENT_TYPES[EventType(event_type)]


def parse_source(uri: str) -> tuple[str, str]:
    """``(component, instance)`` of a :func:`source_uri`; raises :class:`InvalidInput` for another URI."""
    component, _, instance = uri.removeprefix(SOURCE_PREFIX).partition("/")
    if not uri.startswith(SOURCE_PREFIX) or not component or "/" in instance:
        raise InvalidInput(f"event source {uri!r} is not {SOURCE_PREFIX}<component>[/<instance>]",
                           code="event.source")
    return unquote(component), unquote(instance)


def to_cloudevent(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvent of an envelope dict (``Event.model_dump(mode="json", exclude_none=True)``)."""
    source = envelope["source"]
    ce: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": envelope["id"],
        "source": source_uri(source["component"], source.get("instance", "")),
        "type": cloudevent_type(envelope["type"]),
        "subject": envelope["workload_id"],
        "time": envelope["occurred_at"],
        "datacontenttype": DATA_CONTENT_TYPE,
        "correlationid": envelope["workload_id"],
        "data": envelope["payload"],
    }
    if envelope.get("causation_id") is not None:
        ce["causationid"] = envelope["causation_id"]
    if source.get("key_id") is not None:
        ce["signerkeyid"] = source["key_id"]
    about = envelope.get("subject") or {}
    for field, ext in _SUBJECT_EXTENSIONS:
        if about.get(field) is not None:
            ce[ext] = about[field]
    return ce


def is_cloudevent(obj: Any) -> bool:
    """Whether decoded JSON claims to be a CloudEvent (has ``specversion``) rather than a legacy envelope."""
    return isinstance(obj, dict) and "specversion" in obj


def envelope_view(obj: Any) -> Any:
    """Decoded JSON of either wire form in the envelope's field layout; anything else unchanged.

    A CloudEvent's attributes are renamed as in the module's table; a legacy envelope (no
    ``specversion``) is returned as it is. Values are not validated here (``Event`` does
    that), but a CloudEvent that cannot be an event of this schema — another
    ``specversion`` or ``datacontenttype``, an unknown attribute, a ``correlationid`` other
    than its subject, a ``source`` outside ``/ccpipe/`` — raises :class:`InvalidInput`.
    """
    if not is_cloudevent(obj):
        return obj
    if obj["specversion"] != SPEC_VERSION:
        raise InvalidInput(f"CloudEvents specversion {obj['specversion']!r} is not {SPEC_VERSION}",
                           code="event.specversion")
    unknown = sorted(set(obj) - _CONTEXT_ATTRIBUTES)
    if unknown:
        # Strict on purpose: the bytes are signed and logged, so nothing may ride along unread.
        raise InvalidInput(f"CloudEvent attribute(s) {', '.join(map(repr, unknown))} are not part of a ccpipe event",
                           code="event.attribute.unknown")
    if obj.get("datacontenttype", DATA_CONTENT_TYPE) != DATA_CONTENT_TYPE:
        raise InvalidInput(f"datacontenttype {obj['datacontenttype']!r} is not {DATA_CONTENT_TYPE}",
                           code="event.datacontenttype")
    if "correlationid" in obj and obj["correlationid"] != obj.get("subject"):
        raise InvalidInput("correlationid is not the event's subject (its workload id)", code="event.correlationid")
    view: dict[str, Any] = {}
    renames = (("id", "id"), ("subject", "workload_id"), ("time", "occurred_at"), ("causationid", "causation_id"),
               ("data", "payload"))
    for ce_name, name in renames:
        if ce_name in obj:
            view[name] = obj[ce_name]
    if "type" in obj:
        ce_type = obj["type"]
        etype = EVENT_TYPES_BY_CLOUDEVENT_TYPE.get(ce_type) if isinstance(ce_type, str) else None
        if etype is None:
            raise InvalidInput(f"event type {ce_type!r} is not known (known: {', '.join(CLOUDEVENT_TYPES.values())})",
                               hint="check the publisher; only the listed types exist in this schema version",
                               code="event.type.unknown")
        view["type"] = etype.value
    if "source" in obj:
        raw = obj["source"]
        if not isinstance(raw, str):
            raise InvalidInput("event source is not a string", code="event.source")
        component, instance = parse_source(raw)
        view["source"] = {"component": component, "instance": instance}
        if "signerkeyid" in obj:
            view["source"]["key_id"] = obj["signerkeyid"]
    about = {field: obj[ext] for field, ext in _SUBJECT_EXTENSIONS if ext in obj}
    if about:
        view["subject"] = about
    return view


class CloudEvent(BaseModel):
    """The wire form of every event (a CloudEvents 1.0 event, JSON format): what ``ccpipe schema export`` describes.

    Parsing goes through :meth:`ccpipe.schemas.envelope.Event.from_wire`; this model is the
    contract as a document. ``data`` is the payload of ``type`` (``payload.<type>`` schemas).
    """

    model_config = ConfigDict(
        frozen=True, extra="allow", title="ccpipe CloudEvent",
        # Other extension attributes are CloudEvents' (lower-case alphanumerics, scalar values):
        # ccpipe's readers refuse them in a published event, but tools may add their own, like
        # the stream sequence and flag of `ccpipe events --json`.
        json_schema_extra={"propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},
                           "additionalProperties": {"type": ["string", "integer", "boolean"]}},
    )

    specversion: Literal["1.0"] = Field(description="CloudEvents specification version.")
    id: str = Field(description="UUIDv7 of the event, unique per source.")
    source: str = Field(pattern=r"^/ccpipe/[^/]+(/[^/]+)?$",
                        description="URI-reference of the emitter: /ccpipe/<component>[/<instance>].")
    type: str = Field(json_schema_extra={"enum": list(map(str, sorted(EVENT_TYPES_BY_CLOUDEVENT_TYPE)))},
                      description="CDEvents type where one exists (with its version), else dev.ccpipe.<type>.")
    subject: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,127}$", description="The workload id.")
    time: datetime = Field(description="When it happened (RFC 3339, UTC).")
    datacontenttype: Literal["application/json"] = Field(description="Media type of data.")
    correlationid: str = Field(description="Correlation extension: the workload id (one flow per workload).")
    causationid: str | None = Field(default=None, description="Correlation extension: id of the causing event.")
    signerkeyid: str | None = Field(default=None, description="Id of the key that signs this component's events.")
    commit: str | None = Field(default=None, description="Git commit the event is about.")
    imagedigest: str | None = Field(default=None, description="Image manifest digest the event is about.")
    keyresource: str | None = Field(default=None, description="KBS resource path or key id the event is about.")
    node: str | None = Field(default=None, description="Node the event is about.")
    data: dict[str, Any] = Field(description="The payload of this type (see the payload.<type> schemas).")
