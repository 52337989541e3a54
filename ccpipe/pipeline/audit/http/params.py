"""Request parameters → checked values and an :class:`~ccpipe.pipeline.audit.query.EventFilter`. Pure.

Every function raises :class:`~.errors.BadRequest` naming the parameter and what it accepts,
so a malformed request gets a 400 that says what to fix, never a 500 or an empty result that
looks like "nothing happened".

Imports ``schemas`` and :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from ccpipe.pipeline.audit.http.errors import BadRequest
from ccpipe.pipeline.audit.http.overview import STATES, OverviewFilter
from ccpipe.pipeline.audit.query import MAX_LIMIT, EventFilter
from ccpipe.schemas.digest import RECORD_ALGORITHMS, digest_pattern, is_digest
from ccpipe.schemas.events import EventType
from ccpipe.schemas.spec_rules import TeeType

DIGEST_PATTERN = digest_pattern(RECORD_ALGORITHMS)
"""A recorded content digest (sha256, sha384 or sha512, with its hex length), for the OpenAPI document."""
COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
"""A full git object id (SHA-1 or SHA-256)."""
WORKLOAD_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
"""A workload id: one NATS subject token (as the event envelope requires)."""
EVENT_ID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
"""Event ids are UUIDv7 or ULID; this accepts both (and nothing that needs escaping)."""
KEY_RESOURCE_RE = re.compile(r"(kbs://)?/*[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+){2}")
"""A KBS resource ``repo/type/tag``, optionally as ``kbs:///repo/type/tag``."""
INT64_MAX = 2**63 - 1
"""The largest integer the databases store: no leaf index, tree size or sequence is larger."""
MAX_WORKLOADS = 1000
"""Largest ``limit`` of the workload list and of the dashboard's recent workloads."""
INVALID_EVENT_TYPE = "invalid"
"""The type the index gives a logged message that is not a valid event."""

FILTER_PARAMS = (
    "workload_id", "commit", "image_digest", "key_resource", "node_id", "tee", "backend",
    "event_type", "verdict", "since", "until", "limit", "after_seq",
)
"""Query parameters of ``GET /api/v1/events``."""
OVERVIEW_PARAMS = ("state", "tee", "node_id", "since", "until", "limit")
"""Query parameters of ``GET /api/v1/overview``."""
MAX_OVERVIEW = 200
"""Largest ``limit`` of the dashboard's lists."""


def digest(value: str, name: str = "image_digest") -> str:
    """``value`` if it is a ``sha256:…`` (or sha384/sha512) digest in lower-case hex."""
    if not is_digest(value, RECORD_ALGORITHMS):
        raise BadRequest(f"{name} {value[:80]!r} is not a digest like sha256:<64 lower-case hex digits>")
    return value


def commit(value: str) -> str:
    """``value`` if it is a full git commit id (40 or 64 lower-case hex digits)."""
    if not COMMIT_RE.fullmatch(value):
        raise BadRequest(f"commit {value[:80]!r} is not a full commit id (40 or 64 lower-case hex digits)")
    return value


def workload_id(value: str) -> str:
    """``value`` if it is a workload id (lower-case letters, digits and '-')."""
    if not WORKLOAD_RE.fullmatch(value):
        raise BadRequest(f"workload id {value[:80]!r} is not lower-case letters, digits and '-' (at most 128)")
    return value


def event_id(value: str) -> str:
    """``value`` if it looks like an event id (UUIDv7 or ULID characters)."""
    if not EVENT_ID_RE.fullmatch(value):
        raise BadRequest(f"event id {value[:80]!r} is not a UUID or ULID")
    return value


def key_resource(value: str) -> str:
    """``value`` if it is a KBS resource path ``repo/type/tag`` (a ``kbs:///`` prefix is allowed)."""
    if not KEY_RESOURCE_RE.fullmatch(value):
        raise BadRequest(f"key resource {value[:80]!r} is not repo/type/tag (or kbs:///repo/type/tag)")
    return value


def integer(value: str, name: str, *, low: int, high: int) -> int:
    """``value`` as a decimal integer within ``[low, high]``."""
    if not re.fullmatch(r"[0-9]+", value):
        raise BadRequest(f"{name} {value[:40]!r} is not a non-negative decimal integer")
    digits = value.lstrip("0") or "0"
    # More digits than ``high`` has is out of range, said so without parsing a huge number.
    number = int(digits) if len(digits) <= len(str(high)) else None
    if number is None or not low <= number <= high:
        shown = digits if len(digits) <= 40 else digits[:40] + "…"
        raise BadRequest(f"{name} {shown} is not between {low} and {high}")
    return number


def timestamp(value: str, name: str) -> datetime:
    """``value`` as an RFC 3339 time with a zone (``Z`` or ``±hh:mm``)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadRequest(f"{name} {value[:40]!r} is not an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z")
    return when


def _event_type(value: str) -> str:
    known = [t.value for t in EventType]
    if value not in (*known, INVALID_EVENT_TYPE):
        raise BadRequest(f"event_type {value[:40]!r} is not one of {', '.join(known)}, {INVALID_EVENT_TYPE}")
    return value


def _tee(value: str) -> str:
    known = [t.value for t in TeeType]
    if value not in known:
        raise BadRequest(f"tee {value[:40]!r} is not one of {', '.join(known)}")
    return value


def _word(value: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", value):
        raise BadRequest(f"{name} {value[:40]!r} is not a word of letters, digits and . _ : -")
    return value


def single_values(query: Mapping[str, str], accepted: tuple[str, ...], *,
                  may_be_empty: tuple[str, ...] = ()) -> dict[str, str]:
    """The query's parameters as one value each, refusing unknown ones (a misspelt filter must
    not silently list everything), repeated ones (which of two limits would apply?) and empty
    ones except ``may_be_empty`` (``limit=`` is no number; leave a parameter out to omit it).

    ``query`` may be a multi-dict (aiohttp's): its ``items()`` yields every repetition."""
    pairs = list(query.items())
    unknown = sorted({k for k, _ in pairs} - set(accepted))
    if unknown:
        shown = ", ".join(k[:40] for k in unknown[:5])
        raise BadRequest(f"unknown query parameter(s) {shown}; accepted: {', '.join(accepted)}")
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise BadRequest(f"query parameter {name} is given more than once; give it once")
        if value == "" and name not in may_be_empty:
            raise BadRequest(f"query parameter {name} is empty; give a value or leave it out")
        out[name] = value
    return out


def _interval(q: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    since = timestamp(q["since"], "since") if "since" in q else None
    until = timestamp(q["until"], "until") if "until" in q else None
    if since is not None and until is not None and since > until:
        raise BadRequest(f"since {q['since']} is after until {q['until']}")
    return since, until


def overview_filter(query: Mapping[str, str]) -> OverviewFilter:
    """The filter that ``GET /api/v1/overview?…`` asks for (refusals as :func:`single_values`)."""
    q = single_values(query, OVERVIEW_PARAMS)
    state = q.get("state")
    if state is not None and state not in STATES:
        raise BadRequest(f"state {state[:40]!r} is not one of {', '.join(STATES)}")
    since, until = _interval(q)
    return OverviewFilter(
        state=next((s for s in STATES if s == state), None),
        tee=_tee(q["tee"]) if "tee" in q else None,
        node_id=_word(q["node_id"], "node_id") if "node_id" in q else None,
        since=since, until=until,
        limit=integer(q["limit"], "limit", low=1, high=MAX_OVERVIEW) if "limit" in q else 50,
    )


def event_filter(query: Mapping[str, str]) -> EventFilter:
    """The filter that ``GET /api/v1/events?…`` asks for (see :func:`single_values` for what is
    refused). ``since == until`` is an empty interval (no event); ``since`` after ``until`` is
    refused as a mistake."""
    q = single_values(query, FILTER_PARAMS)
    since, until = _interval(q)
    return EventFilter(
        workload_id=workload_id(q["workload_id"]) if "workload_id" in q else None,
        commit=commit(q["commit"]) if "commit" in q else None,
        image_digest=digest(q["image_digest"]) if "image_digest" in q else None,
        key_resource=key_resource(q["key_resource"]) if "key_resource" in q else None,
        node_id=_word(q["node_id"], "node_id") if "node_id" in q else None,
        tee=_tee(q["tee"]) if "tee" in q else None,
        backend=_word(q["backend"], "backend") if "backend" in q else None,
        event_type=_event_type(q["event_type"]) if "event_type" in q else None,
        verdict=_word(q["verdict"], "verdict") if "verdict" in q else None,
        since=since,
        until=until,
        limit=integer(q["limit"], "limit", low=1, high=MAX_LIMIT) if "limit" in q else 100,
        after_seq=integer(q["after_seq"], "after_seq", low=0, high=INT64_MAX) if "after_seq" in q else 0,
    )
