"""Reading the trail when no service runs: the stored events from the local audit log.

The audit log holds every event that was on the bus, with the ``Ccpipe-Signature`` header it
carried (its leaves), so ``ccpipe events``, ``status`` and ``k8s manifest`` can read it as they
read the stream: each event is still checked against the keyring as the consumers check it. What
the log does not keep is the subject a message was stored under; an event read from it is taken
as stored under its own subject (the audit service logs only ``ccpipe.evt.>``).

A command that falls back says so on stderr, with the age of the index's last event, so nobody
mistakes a stale copy for the live stream.

Imports the CLI helpers, the runtime's reader types and :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from nats.js import JetStreamContext

from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.store.interface import StoredLeaf
from ccpipe.pipeline.audit.store.open import open_audit_store, sqlite_path
from ccpipe.pipeline.cli.common import jetstream
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.reader import StoredEvent
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, subject_for
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError

UNREACHABLE = (ConfigurationError, TransientError)
"""What connecting to the services raises when none runs (nothing configured, nothing answers)."""


def _stored(leaf: StoredLeaf) -> StoredEvent:
    headers = {SIGNATURE_HEADER: leaf.signature} if leaf.signature else {}
    try:
        event = Event.from_wire(leaf.data)
    except InvalidInput as exc:
        return StoredEvent(leaf.stream_seq, None, leaf.data, headers, exc.one_line())
    return StoredEvent(leaf.stream_seq, event, leaf.data, headers, subject=subject_for(event.workload_id, event.type))


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def local_events(settings: Settings, workload_id: str | None, command: str,
                 why: ConfigurationError | TransientError, note: str = "") -> list[StoredEvent]:
    """The stored events (of one workload, or all) in stream order, from the local audit log;
    says on stderr that it reads them there, how old the last event is, and ``note``.

    Raises ``why`` when there is no local audit log either (nothing was ever logged here).
    """
    if not settings.audit_db and not sqlite_path(settings).exists():
        raise why
    store = open_audit_store(settings)
    try:
        if workload_id:
            leaves = [leaf for row in store.journey(workload_id)
                      for leaf in store.leaves(row.leaf_index, row.leaf_index + 1)]
        else:
            leaves = list(store.leaves())
        last = store.query(EventFilter(limit=1, newest_first=True))
    finally:
        store.close()
    where = ("the audit database CCPIPE_AUDIT_DB" if settings.audit_db
             else f"the local audit index {sqlite_path(settings)}")
    if last:
        when = last[0].occurred_at
        age = f"its last event occurred {_age((datetime.now(UTC) - when).total_seconds())} ago, at {when.isoformat()}"
    else:
        age = "it holds no event yet"
    print(f"ccpipe {command}: no running services ({why.message}); reading {where} instead ({age}){note}",
          file=sys.stderr, flush=True)
    return [_stored(leaf) for leaf in leaves]


async def read_trail(settings: Settings, name: str, workload_id: str | None, command: str,
                     read: Callable[[JetStreamContext], AsyncIterator[StoredEvent]], *,
                     note: str = "") -> AsyncIterator[StoredEvent]:
    """The stored events ``read`` yields from the running services' stream, or, when they cannot
    be reached, those of the local audit log (:func:`local_events`, told ``note``). An error after the
    connection is made is raised as it is: the stream, not a copy, was being read."""
    connected = False
    try:
        async with jetstream(settings, name) as js:
            connected = True
            async for stored in read(js):
                yield stored
    except UNREACHABLE as exc:
        if connected:
            raise
        for stored in local_events(settings, workload_id, command, exc, note):
            yield stored
