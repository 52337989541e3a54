"""Questions the audit trail answers: the query API shared by the CLI, the HTTP API and the web page.

Everything here is synchronous (SQLite and psycopg calls block); an asyncio caller wraps
each call with ``asyncio.to_thread``. The backends in :mod:`ccpipe.pipeline.audit.store`
implement :class:`AuditIndex`; :func:`ccpipe.pipeline.audit.store.open.open_index` opens the
configured one. This module imports no backend, so the backends can import its types.

Results are in stream order (= log order, ``seq`` ascending); page with
``EventFilter(after_seq=<last seq seen>)``. ``EventFilter(newest_first=True)`` gives the latest
matches instead, in reverse stream order.

Search semantics, per :class:`EventFilter` field:

* ``workload_id``, ``event_type`` — the event's own envelope fields;
* ``commit``, ``image_digest`` — events that name it, **and** every later event of a workload
  once one of its events named it (a ``key.released`` is about the image its workload was
  built into, though it does not repeat the digest);
* ``key_resource`` (``repo/type/tag``; a ``kbs:///`` prefix is ignored), ``node_id``,
  ``tee``, ``backend``, ``verdict`` (EAR status ``affirming``/``warning``/…, or
  ``rejected``, ``released``, ``denied``, ``failed``) — events that name it;
* ``since`` / ``until`` — ``occurred_at`` in ``[since, until)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ccpipe.pipeline.audit.errors import AuditError

SIGNATURE_STATES = ("valid", "unsigned", "unknown_key", "bad_signature", "wrong_signer", "not_emitter", "revoked_key")
"""Values of :attr:`IndexedEvent.signature`; anything but ``valid`` is a flag."""
MAX_LIMIT = 10_000
"""Largest page a query returns."""


class QueryError(AuditError):
    """A query asked for something the index cannot answer (a bad limit, a bad backend URL)."""

    code = "audit.query.invalid"


@dataclass(frozen=True)
class EventFilter:
    """Which events to list; every field set narrows the result (AND)."""

    workload_id: str | None = None
    commit: str | None = None
    image_digest: str | None = None
    key_resource: str | None = None
    node_id: str | None = None
    tee: str | None = None
    backend: str | None = None
    event_type: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    after_seq: int = 0
    newest_first: bool = False
    """The last ``limit`` matches, latest first (what a dashboard shows), instead of the first."""


@dataclass(frozen=True)
class IndexedEvent:
    """One logged event as the index holds it."""

    seq: int
    """JetStream stream sequence (1-based): the order of the trail."""
    leaf_index: int
    """Its leaf index in the Merkle log (0-based)."""
    event_id: str
    type: str
    """Event type, or ``invalid`` for a message that is not a valid event."""
    workload_id: str
    occurred_at: datetime
    component: str
    """``source.component`` the event claims."""
    signature: str
    """One of :data:`SIGNATURE_STATES`."""
    summary: str
    fields: dict[str, str] = field(default_factory=dict)
    """Searchable fields of the event (commit, image_digest, key_resource, node_id, tee…)."""
    raw: bytes = b""
    """The canonical event bytes exactly as logged (the Merkle leaf)."""


class AuditIndex(Protocol):
    """The read side of the trail. Implementations: SQLite and PostgreSQL."""

    def query(self, f: EventFilter) -> list[IndexedEvent]:
        """Events matching ``f``, in stream order, at most ``f.limit``; raises :class:`QueryError`."""
        ...

    def journey(self, workload_id: str) -> list[IndexedEvent]:
        """Every event of one workload, in stream order (its chain of custody)."""
        ...

    def key_recipients(self, resource: str) -> list[IndexedEvent]:
        """"Who got this key": ``key.released`` events of ``resource``, in stream order."""
        ...

    def runs_of_image(self, image_digest: str) -> list[IndexedEvent]:
        """"Everything that ran this image": placements, launches, runs, exits and key
        releases of every workload built into ``image_digest``."""
        ...

    def event(self, event_id: str) -> IndexedEvent | None:
        """The event with this id (the first logged, if it was published twice)."""
        ...

    def workloads(self, search: str = "", limit: int = 20) -> list[str]:
        """Workload ids containing ``search``, most recently active first."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


RUN_TYPES = ("scheduled", "enclave.launched", "workload.running", "workload.exited", "key.released")
"""Event types that say where and how an image ran (for :meth:`AuditIndex.runs_of_image`)."""


def check_limit(limit: int) -> int:
    """``limit`` if it is within 1 … :data:`MAX_LIMIT`; raises :class:`QueryError` otherwise."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit {limit} is not between 1 and {MAX_LIMIT}")
    return limit
