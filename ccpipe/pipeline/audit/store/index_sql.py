"""The index tables and their SQL, shared by the SQLite and PostgreSQL stores.

Tables (created beside the log's ``leaves``/``nodes``/``state`` in the same database, so one
transaction writes a batch's leaves, index rows and the new stream position):

* ``idx_events`` — one row per leaf: stream ``seq`` (key), ``leaf_index``, envelope columns,
  the signature verdict, a summary and the display fields (JSON);
* ``idx_terms(kind, value, seq)`` — search terms (see :mod:`ccpipe.pipeline.audit.fields`), primary key
  ``(kind, value, seq)`` so a by-image or by-key query is one index range scan;
* ``idx_workload_terms`` — the commit and images each workload is known by (inherited by its
  later events); ``idx_workloads`` — first/last sequence of each workload.

SQL is written once with ``?`` placeholders; :class:`IndexSql` is given a ``run`` function
that executes it on the backend (PostgreSQL's adapter swaps ``?`` for ``%s``).

Imports :mod:`ccpipe.pipeline.audit` modules only.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from ccpipe.pipeline.audit.fields import INHERITED_KINDS, Extracted, from_micros, normalize_key, to_micros
from ccpipe.pipeline.audit.query import RUN_TYPES, EventFilter, IndexedEvent, QueryError, check_limit
from ccpipe.pipeline.event_trust import SignatureVerdict

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Executes one statement with parameters; returns the rows (empty for writes)."""
RunMany = Callable[[str, Sequence[Sequence[Any]]], None]
"""Executes one statement once per parameter row."""


def index_ddl(blob: str, bigint: str, without_rowid: str) -> list[str]:
    """``CREATE`` statements of the index tables for one dialect's type names."""
    return [
        f"""CREATE TABLE IF NOT EXISTS idx_events (
            seq {bigint} PRIMARY KEY,
            leaf_index {bigint} NOT NULL UNIQUE,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            workload_id TEXT NOT NULL,
            occurred_at {bigint} NOT NULL,
            component TEXT NOT NULL,
            signature TEXT NOT NULL,
            summary TEXT NOT NULL,
            fields TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_events_event_id ON idx_events(event_id, seq)",
        "CREATE INDEX IF NOT EXISTS idx_events_workload ON idx_events(workload_id, seq)",
        "CREATE INDEX IF NOT EXISTS idx_events_type ON idx_events(type, seq)",
        "CREATE INDEX IF NOT EXISTS idx_events_time ON idx_events(occurred_at, seq)",
        "CREATE INDEX IF NOT EXISTS idx_events_signature ON idx_events(signature, seq)",
        f"""CREATE TABLE IF NOT EXISTS idx_terms (
            kind TEXT NOT NULL, value TEXT NOT NULL, seq {bigint} NOT NULL,
            PRIMARY KEY (kind, value, seq)){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS idx_workload_terms (
            workload_id TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (workload_id, kind, value)){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS idx_workloads (
            workload_id TEXT PRIMARY KEY, first_seq {bigint} NOT NULL, last_seq {bigint} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_workloads_last ON idx_workloads(last_seq)",
    ]


WL_TERMS_CACHED = 1024
"""Workloads whose inherited terms the index keeps in memory (those with events in flight)."""

_VERDICT_NAMES = {
    SignatureVerdict.VALID: "valid",
    SignatureVerdict.UNSIGNED: "unsigned",
    SignatureVerdict.UNKNOWN_KEY: "unknown_key",
    SignatureVerdict.BAD_SIGNATURE: "bad_signature",
    # A header that does not parse cannot be a valid signature of anything.
    SignatureVerdict.MALFORMED: "bad_signature",
    SignatureVerdict.WRONG_SIGNER: "wrong_signer",
    SignatureVerdict.NOT_EMITTER: "not_emitter",
    SignatureVerdict.REVOKED_KEY: "revoked_key",
}


def signature_state(verdict: SignatureVerdict) -> str:
    """The :attr:`IndexedEvent.signature` value of a verdict."""
    return _VERDICT_NAMES[verdict]


class IndexRow(NamedTuple):
    """What to index for one new leaf (built before the transaction, written inside it).

    A named tuple of plain values, not a dataclass around :class:`Extracted`: rows are built in
    the ingest worker processes and pickled back, and a tuple of strings costs a fraction of a
    microsecond to unpickle where nested dataclasses cost tens.
    """

    seq: int
    event_id: str
    type: str
    workload_id: str
    occurred_at_us: int
    component: str
    signature: str
    """The :attr:`IndexedEvent.signature` state."""
    summary: str
    fields_json: str
    """The display fields as JSON (sorted keys), as stored."""
    terms: tuple[tuple[str, str], ...]
    """The event's own search terms (inherited ones are added when written)."""

    @classmethod
    def of(cls, seq: int, x: Extracted, signature: str) -> IndexRow:
        """The row of the message at stream ``seq`` with extracted fields ``x``."""
        return cls(seq, x.event_id, x.type, x.workload_id, x.occurred_at_us, x.component, signature, x.summary,
                   json.dumps(x.fields, sort_keys=True), x.terms)


EVENT_COLUMNS = ("seq", "leaf_index", "event_id", "type", "workload_id", "occurred_at", "component", "signature",
                 "summary", "fields")
"""The columns of ``idx_events``, in the order :func:`table_rows` gives them."""


class TableRows(NamedTuple):
    """What a batch of :class:`IndexRow` writes to each index table."""

    events: list[tuple[Any, ...]]
    """``idx_events`` rows, columns as :data:`EVENT_COLUMNS`."""
    terms: list[tuple[str, str, int]]
    """``idx_terms`` rows: (kind, value, seq), inherited terms included."""
    workload_terms: list[tuple[str, str, str]]
    """New ``idx_workload_terms`` rows: (workload id, kind, value)."""
    workloads: dict[str, tuple[int, int]]
    """Per workload of the batch: (first seq in the batch, last seq)."""


def table_rows(rows: Iterable[IndexRow], first_index: int,
               inherited: Callable[[str], set[tuple[str, str]]]) -> TableRows:
    """The table rows of new leaves ``first_index, …`` in stream order. Pure but for ``inherited``:
    a workload's inherited terms so far, a set this updates in place with what the batch adds."""
    out = TableRows([], [], [], {})
    for i, row in enumerate(rows):
        out.events.append((row.seq, first_index + i, row.event_id, row.type, row.workload_id, row.occurred_at_us,
                           row.component, row.signature, row.summary, row.fields_json))
        own = set(row.terms)
        if row.workload_id:
            known = inherited(row.workload_id)
            for kind, value in sorted(own - known):
                if kind in INHERITED_KINDS:
                    known.add((kind, value))
                    out.workload_terms.append((row.workload_id, kind, value))
            own |= known
            first, _ = out.workloads.get(row.workload_id, (row.seq, row.seq))
            out.workloads[row.workload_id] = (first, row.seq)
        out.terms.extend((kind, value, row.seq) for kind, value in sorted(own))
    return out


_SELECT = (
    "SELECT e.seq, e.leaf_index, e.event_id, e.type, e.workload_id, e.occurred_at, e.component, "
    "e.signature, e.summary, e.fields, l.data FROM idx_events e JOIN leaves l ON l.idx = e.leaf_index"
)


def _row(r: Sequence[Any]) -> IndexedEvent:
    return IndexedEvent(
        seq=int(r[0]), leaf_index=int(r[1]), event_id=r[2], type=r[3], workload_id=r[4],
        occurred_at=from_micros(int(r[5])), component=r[6], signature=r[7], summary=r[8],
        fields=json.loads(r[9]), raw=bytes(r[10]),
    )


class IndexSql:
    """Writes and reads the index tables through ``run``/``run_many`` (one backend connection)."""

    def __init__(self, run: Run, run_many: RunMany) -> None:
        self._run, self._run_many = run, run_many
        # workload id -> its inherited (kind, value) terms; read-through cache of
        # idx_workload_terms, dropped on rollback by forget(). The latest WL_TERMS_CACHED
        # workloads only: a workload's events come while it is in flight, and a cache of every
        # workload ever indexed was the audit log's share of ccpipe up's growing RSS.
        self._wl_terms: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()

    def forget(self) -> None:
        """Drop cached state (after a rolled-back transaction)."""
        self._wl_terms.clear()

    def _inherited(self, workload_id: str) -> set[tuple[str, str]]:
        terms = self._wl_terms.get(workload_id)
        if terms is None:
            rows = self._run("SELECT kind, value FROM idx_workload_terms WHERE workload_id = ?", (workload_id,))
            terms = self._wl_terms[workload_id] = {(str(k), str(v)) for k, v in rows}
        else:
            self._wl_terms.move_to_end(workload_id)
        return terms

    def write(self, rows: Iterable[IndexRow], first_index: int) -> None:
        """Insert the index rows of new leaves ``first_index, first_index + 1, …`` (inside the
        caller's transaction, in stream order)."""
        # trimmed between batches, never within one: a batch's rows may extend a workload's cached
        # terms before they are written to idx_workload_terms
        while len(self._wl_terms) > WL_TERMS_CACHED:
            self._wl_terms.popitem(last=False)
        events, terms, wl_terms, workloads = table_rows(rows, first_index, self._inherited)
        if not events:
            return
        self._run_many(
            f"INSERT INTO idx_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})",
            events,
        )
        if terms:
            self._run_many("INSERT INTO idx_terms (kind, value, seq) VALUES (?, ?, ?)", terms)
        if wl_terms:
            self._run_many("INSERT INTO idx_workload_terms (workload_id, kind, value) VALUES (?, ?, ?)", wl_terms)
        self._run_many(
            "INSERT INTO idx_workloads (workload_id, first_seq, last_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (workload_id) DO UPDATE SET last_seq = excluded.last_seq",
            [(wl, a, b) for wl, (a, b) in workloads.items()],
        )

    # --- read side ------------------------------------------------------------------------

    def query(self, f: EventFilter) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.query`."""
        limit = check_limit(f.limit)
        if f.after_seq < 0:
            raise QueryError(f"after_seq {f.after_seq} is negative")
        where: list[str] = ["e.seq > ?"]
        params: list[Any] = [f.after_seq]
        for col, value in (("e.workload_id", f.workload_id), ("e.type", f.event_type)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        if f.since is not None:
            where.append("e.occurred_at >= ?")
            params.append(to_micros(f.since))
        if f.until is not None:
            where.append("e.occurred_at < ?")
            params.append(to_micros(f.until))
        terms = [("commit", f.commit), ("image", f.image_digest),
                 ("key", normalize_key(f.key_resource) if f.key_resource is not None else None),
                 ("node", f.node_id), ("tee", f.tee), ("backend", f.backend), ("verdict", f.verdict)]
        for kind, value in terms:
            if value is not None:
                where.append("e.seq IN (SELECT seq FROM idx_terms WHERE kind = ? AND value = ? AND seq > ?)")
                params.extend([kind, value, f.after_seq])
        order = "e.seq DESC" if f.newest_first else "e.seq"
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        return [_row(r) for r in self._run(sql, (*params, limit))]

    def journey(self, workload_id: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.journey`."""
        return [_row(r) for r in self._run(f"{_SELECT} WHERE e.workload_id = ? ORDER BY e.seq", (workload_id,))]

    def key_recipients(self, resource: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.key_recipients`."""
        sql = (f"{_SELECT} WHERE e.seq IN (SELECT seq FROM idx_terms WHERE kind = 'key' AND value = ?) "
               "AND e.type = 'key.released' ORDER BY e.seq")
        return [_row(r) for r in self._run(sql, (normalize_key(resource),))]

    def runs_of_image(self, image_digest: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.runs_of_image`."""
        marks = ", ".join("?" for _ in RUN_TYPES)
        sql = (f"{_SELECT} WHERE e.seq IN (SELECT seq FROM idx_terms WHERE kind = 'image' AND value = ?) "
               f"AND e.type IN ({marks}) ORDER BY e.seq")
        return [_row(r) for r in self._run(sql, (image_digest, *RUN_TYPES))]

    def event(self, event_id: str) -> IndexedEvent | None:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.event`."""
        rows = self._run(f"{_SELECT} WHERE e.event_id = ? ORDER BY e.seq LIMIT 1", (event_id,))
        return _row(rows[0]) if rows else None

    def workloads(self, search: str = "", limit: int = 20) -> list[str]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.workloads`."""
        check_limit(limit)
        # LIKE with escaped wildcards, so a search for "a_b" does not match "axb".
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._run(
            "SELECT workload_id FROM idx_workloads WHERE workload_id LIKE ? ESCAPE '\\' "
            "ORDER BY last_seq DESC LIMIT ?",
            (pattern, limit),
        )
        return [str(r[0]) for r in rows]

    def flagged(self, limit: int = 100, after_seq: int = 0) -> list[IndexedEvent]:
        """Events whose signature is not ``valid``, in stream order."""
        check_limit(limit)
        sql = f"{_SELECT} WHERE e.signature <> 'valid' AND e.seq > ? ORDER BY e.seq LIMIT ?"
        return [_row(r) for r in self._run(sql, (after_seq, limit))]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every index row, sorted (to compare an index with a fresh rebuild)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, order in (("idx_events", "seq"), ("idx_terms", "kind, value, seq"),
                             ("idx_workload_terms", "workload_id, kind, value"), ("idx_workloads", "workload_id")):
            out[table] = [tuple(r) for r in self._run(f"SELECT * FROM {table} ORDER BY {order}", ())]
        return out

    # --- what ``audit verify`` compares with a rebuild ------------------------------------

    def event_rows(self, page: int = 5000) -> Iterator[tuple[Any, ...]]:
        """Every ``idx_events`` row as stored (columns as :data:`EVENT_COLUMNS`), by ``seq``, paged."""
        after = -(2**63)
        while True:
            rows = self._run(f"SELECT {', '.join(EVENT_COLUMNS)} FROM idx_events WHERE seq > ? ORDER BY seq LIMIT ?",
                             (after, page))
            yield from (tuple(r) for r in rows)
            if len(rows) < page:
                return
            after = int(rows[-1][0])

    def term_rows(self, page: int = 20000) -> Iterator[tuple[str, str, int]]:
        """Every ``idx_terms`` row as stored, in key order, paged along the primary key."""
        rows = self._run("SELECT kind, value, seq FROM idx_terms ORDER BY kind, value, seq LIMIT ?", (page,))
        while True:
            yield from ((str(k), str(v), int(q)) for k, v, q in rows)
            if len(rows) < page:
                return
            rows = self._run("SELECT kind, value, seq FROM idx_terms WHERE (kind, value, seq) > (?, ?, ?) "
                             "ORDER BY kind, value, seq LIMIT ?", (*rows[-1], page))

    def term_rows_between(self, first_seq: int, last_seq: int) -> set[tuple[str, str, int]]:
        """The ``idx_terms`` rows of sequences ``first_seq … last_seq`` (a scan: for naming damage)."""
        rows = self._run("SELECT kind, value, seq FROM idx_terms WHERE seq >= ? AND seq <= ?", (first_seq, last_seq))
        return {(str(k), str(v), int(q)) for k, v, q in rows}

    def workload_rows(self) -> tuple[set[tuple[str, str, str]], dict[str, tuple[int, int]]]:
        """The ``idx_workload_terms`` rows and the ``idx_workloads`` spans (one row per workload)."""
        terms = {(str(w), str(k), str(v)) for w, k, v in self._run(
            "SELECT workload_id, kind, value FROM idx_workload_terms", ())}
        spans = {str(w): (int(a), int(b)) for w, a, b in self._run(
            "SELECT workload_id, first_seq, last_seq FROM idx_workloads", ())}
        return terms, spans


class IndexQueries:
    """The read side of :class:`ccpipe.pipeline.audit.query.AuditIndex` for a store that holds an
    :class:`IndexSql` as ``self.index`` (the SQLite and PostgreSQL audit stores)."""

    index: IndexSql

    def query(self, f: EventFilter) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.query`."""
        return self.index.query(f)

    def journey(self, workload_id: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.journey`."""
        return self.index.journey(workload_id)

    def key_recipients(self, resource: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.key_recipients`."""
        return self.index.key_recipients(resource)

    def runs_of_image(self, image_digest: str) -> list[IndexedEvent]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.runs_of_image`."""
        return self.index.runs_of_image(image_digest)

    def event(self, event_id: str) -> IndexedEvent | None:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.event`."""
        return self.index.event(event_id)

    def workloads(self, search: str = "", limit: int = 20) -> list[str]:
        """See :meth:`ccpipe.pipeline.audit.query.AuditIndex.workloads`."""
        return self.index.workloads(search, limit)

    def flagged(self, limit: int = 100, after_seq: int = 0) -> list[IndexedEvent]:
        """Events whose signature is not ``valid``."""
        return self.index.flagged(limit, after_seq)
