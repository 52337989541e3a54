"""The OpenAPI 3.1 document of the audit API, served at ``/openapi.json``.

Paths are written here; every response schema is generated from :mod:`.models` (pydantic's
JSON Schema 2020-12 is OpenAPI 3.1's dialect), so the document describes exactly what the
handlers send. Parameter patterns come from :mod:`.params`, the code that enforces them.

Imports pydantic and :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from ccpipe.pipeline.audit.http import params
from ccpipe.pipeline.audit.http.models import RESPONSE_MODELS
from ccpipe.pipeline.audit.http.overview import SCAN, STATES
from ccpipe.pipeline.audit.query import MAX_LIMIT
from ccpipe.schemas.events import EventType
from ccpipe.schemas.spec_rules import TeeType

VERSION = "1.0.0"
"""Version of the API (the ``/api/v1`` contract)."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "A malformed, empty, repeated or unknown parameter; the error names it.",
        404: "Not in the trail; the error names what was asked for.",
        409: "Not yet covered by a signed checkpoint; retry after the next one.",
        503: "The log store is unavailable or damaged, or (heavy queries) too many are running or waiting: "
             "retry after the seconds in Retry-After.",
    }
    return {str(s): _json("ErrorBody", text[s]) for s in statuses}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _pattern(regex: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^({regex})$"}


def _get(op_id: str, summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]],
         errors: tuple[int, ...]) -> dict[str, Any]:
    return {"get": {"operationId": op_id, "summary": summary, "parameters": parameters,
                    "responses": {"200": ok, **_errors(*errors)}}}


def _filter_parameters() -> list[dict[str, Any]]:
    word = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
    time = {"type": "string", "format": "date-time"}
    return [
        _query("workload_id", "Events of this workload.", _pattern(params.WORKLOAD_RE.pattern)),
        _query("commit", "Events naming this commit, and later events of its workloads.",
               _pattern(params.COMMIT_RE.pattern)),
        _query("image_digest", "Events naming this image, and later events of its workloads.",
               _pattern(params.DIGEST_PATTERN)),
        _query("key_resource", "Events naming this KBS resource repo/type/tag.",
               _pattern(params.KEY_RESOURCE_RE.pattern)),
        _query("node_id", "Events naming this node.", word),
        _query("tee", "Events naming this TEE type.", {"type": "string", "enum": [t.value for t in TeeType]}),
        _query("backend", "Events naming this evidence backend (emulated, configfs-tsm, …).", word),
        _query("event_type", "Events of this type.",
               {"type": "string", "enum": [*(t.value for t in EventType), params.INVALID_EVENT_TYPE]}),
        _query("verdict", "EAR status (affirming, warning, contraindicated, none) or rejected, released, "
                          "denied, failed.", word),
        _query("since", "occurred_at ≥ since (RFC 3339 with a zone).", time),
        _query("until", "occurred_at < until (RFC 3339 with a zone); until = since matches nothing, until before "
                        "since is refused (400).", time),
        _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}),
        _query("after_seq", "Return events after this stream sequence (next_after_seq of the previous page).",
               {"type": "integer", "minimum": 0, "maximum": params.INT64_MAX, "default": 0}),
    ]


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; callers must not mutate it)."""
    _, defs = models_json_schema([(m, "serialization") for m in RESPONSE_MODELS],
                                 ref_template="#/components/schemas/{model}")
    _tree_size = {"type": "integer", "minimum": 1, "maximum": params.INT64_MAX}
    event_id = _path("event_id", "Event id (UUIDv7 or ULID).", _pattern(params.EVENT_ID_RE.pattern))
    paths: dict[str, Any] = {
        "/api/v1/events": _get("listEvents", "Events matching every given filter, in stream order, one page.",
                               _json("EventPage", "One page."), _filter_parameters(), (400, 503)),
        "/api/v1/events/{event_id}": _get("getEvent", "One event: its index entry and raw canonical bytes.",
                                          _json("EventDetail", "The event."), [event_id], (400, 404)),
        "/api/v1/events/{event_id}/proof": _get(
            "getEventProof", "Inclusion proof of the event against the latest signed checkpoint.",
            _json("ProofDocument", "The proof document (DESIGN.md, Audit proofs)."), [event_id],
            (400, 404, 409, 503)),
        "/api/v1/leaves/{index}/proof": _get(
            "getLeafProof", "Inclusion proof of a leaf by index (for a logged message that has no event id).",
            _json("ProofDocument", "The proof document."),
            [_path("index", "Leaf index (0-based).", {"type": "integer", "minimum": 0, "maximum": params.INT64_MAX})],
            (400, 404, 409, 503)),
        "/api/v1/workloads": _get(
            "listWorkloads", "Workload ids containing a search string, most recently active first.",
            _json("WorkloadList", "Workload ids."),
            [_query("search", "Part of a workload id.", {"type": "string", "maxLength": 128}),
             _query("limit", "How many.", {"type": "integer", "minimum": 1, "maximum": params.MAX_WORKLOADS,
                                           "default": 20})],
            (400, 503)),
        "/api/v1/overview": _get(
            "getOverview", f"The dashboard: recent workloads (of the {SCAN} most recently active) with their state, "
                           "TEE, node, duration and failure reason, and recent denied keys and rejected attestations; "
                           "latest first.",
            _json("Overview", "The dashboard's lists."),
            [_query("state", "Workloads in this state.", {"type": "string", "enum": list(STATES)}),
             _query("tee", "Workloads placed on, and refusals naming, this TEE type.",
                    {"type": "string", "enum": [t.value for t in TeeType]}),
             _query("node_id", "Workloads placed on, and refusals naming, this node.",
                    {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}),
             _query("since", "Workloads active at or after, refusals that occurred at or after, this time.",
                    {"type": "string", "format": "date-time"}),
             _query("until", "Workloads that started, refusals that occurred, before this time; before since is "
                             "refused (400).", {"type": "string", "format": "date-time"}),
             _query("limit", "Length of each list.",
                    {"type": "integer", "minimum": 1, "maximum": params.MAX_OVERVIEW, "default": 50})],
            (400, 503)),
        "/api/v1/workloads/{workload_id}/journey": _get(
            "getJourney", "A workload's chain of custody and every one of its events.",
            _json("Journey", "The journey."),
            [_path("workload_id", "Workload id.", _pattern(params.WORKLOAD_RE.pattern))], (400, 404, 503)),
        "/api/v1/keys/{resource}/recipients": _get(
            "getKeyRecipients", "Who got this key: every key.released event of a KBS resource.",
            _json("KeyRecipients", "The releases (empty: nobody)."),
            [_path("resource", "KBS resource repo/type/tag; its two slashes stay unencoded in the path.",
                   _pattern(params.KEY_RESOURCE_RE.pattern))], (400, 503)),
        "/api/v1/images/{digest}/runs": _get(
            "getImageRuns", "Everything that ran an image: placements, launches, runs, exits, key releases.",
            _json("ImageRuns", "The runs (empty: nothing ran it)."),
            [_path("digest", "Image manifest digest.", _pattern(params.DIGEST_PATTERN))], (400, 503)),
        "/api/v1/checkpoint": _get(
            "getCheckpoint", "The latest signed checkpoint (C2SP tlog-checkpoint signed note).",
            {"description": "The signed note.", "content": {"text/plain": {"schema": {"type": "string"}}}},
            [], (404,)),
        "/api/v1/consistency": _get(
            "getConsistencyProof", "RFC 6962 consistency proof between two tree sizes.",
            _json("ConsistencyProof", "The proof and the checkpoints signed at both sizes."),
            [{**_query("from", "Older tree size; larger than to is refused (400).", _tree_size), "required": True},
             _query("to", "Newer tree size; default: the latest checkpoint's; beyond it: 409.", _tree_size)],
            (400, 404, 409)),
        "/readyz": {"get": {
            "operationId": "getReadiness", "summary": "Whether the audit service logs every event, and its ingest lag.",
            "parameters": [], "responses": {
                "200": _json("ServiceStatus", "Ready: the service holds the writer lease and logs every event."),
                "503": _json("ServiceStatus", "Not ready: standing by, degraded, refused, or not reporting; "
                                              "reason says which.")}}},
        "/healthz": _get("getLiveness", "Liveness: 200 while the process serves.",
                         {"description": "Alive.", "content": {"application/json": {"schema": {
                             "type": "object", "properties": {"status": {"const": "ok"}}}}}}, [], ()),
        "/metrics": _get("getMetrics", "The process's Prometheus metrics (text exposition format 0.0.4).",
                         {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                         [], ()),
        "/openapi.json": _get("getOpenApi", "This document.",
                              {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {
                                  "type": "object"}}}}, [], ()),
        "/": _get("getWebPage", "The web page: dashboard, search, chain of custody, in-browser proof check.",
                  {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}, [], ()),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ccpipe audit API",
            "version": VERSION,
            "description": "Read-only queries, proofs and checkpoints of the ccpipe audit trail: every event of "
                           "the supply chain in an RFC 6962 Merkle log with C2SP signed checkpoints.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {"schemas": defs["$defs"]},
    }
