"""The audit log and index in PostgreSQL (``CCPIPE_AUDIT_DB=postgresql://…``), with psycopg 3.

The same tables as the SQLite store (``leaves``, ``nodes``, ``checkpoints``, ``state`` and
the index tables of :mod:`.index_sql`), the same contract (:class:`~.interface.LogStore`,
:class:`~ccpipe.pipeline.audit.query.AuditIndex`): :meth:`PostgresAudit.append_indexed` writes a
batch's leaves, nodes, index rows and new stream position in one transaction that first
locks the ``state`` row (``SELECT … FOR UPDATE``), so two writers can never both extend the
tree from the same size.

One connection, used under a lock (callers may come from several threads). Imports
``psycopg`` and :mod:`ccpipe.pipeline.audit` modules only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, Self

import psycopg

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.errors import StoreError
from ccpipe.pipeline.audit.integrate import integrate
from ccpipe.pipeline.audit.merkle import EMPTY_ROOT, NodeID
from ccpipe.pipeline.audit.store.index_sql import IndexQueries, IndexRow, IndexSql, index_ddl
from ccpipe.pipeline.audit.store.interface import Appended, StoredCheckpoint, StoredLeaf
from ccpipe.pipeline.audit.store.sqlite_audit import default_row

_LOG_DDL = [
    """CREATE TABLE IF NOT EXISTS leaves (
        idx BIGINT PRIMARY KEY, stream_seq BIGINT NOT NULL UNIQUE, event_id TEXT,
        leaf_hash BYTEA NOT NULL, data BYTEA NOT NULL, signature TEXT)""",
    "CREATE INDEX IF NOT EXISTS leaves_event_id ON leaves(event_id)",
    """CREATE TABLE IF NOT EXISTS nodes (
        level INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY (level, idx))""",
    "CREATE TABLE IF NOT EXISTS checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS state (
        id INTEGER PRIMARY KEY CHECK (id = 0), size BIGINT NOT NULL, root BYTEA NOT NULL, last_seq BIGINT)""",
]
_PAGE = 10_000


def _pg(sql: str) -> str:
    # The shared SQL uses "?" placeholders; psycopg wants "%s" (no literal "?" or "%" occurs).
    return sql.replace("?", "%s")


class PostgresAudit(IndexQueries):
    """Log store and audit index in one PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self.path = dsn.split("@")[-1]  # for messages: never echo a password
        self._lock = threading.RLock()
        self._pending: dict[int, IndexRow] = {}
        try:
            self._db = psycopg.connect(dsn, autocommit=True)
            with self._db.transaction():
                # One creator at a time: CREATE TABLE IF NOT EXISTS races on the catalogue.
                self._db.execute("SELECT pg_advisory_xact_lock(6962)")
                for stmt in _LOG_DDL + index_ddl("BYTEA", "BIGINT", ""):
                    self._db.execute(stmt)
                self._db.execute(
                    "INSERT INTO state (id, size, root, last_seq) VALUES (0, 0, %s, NULL) ON CONFLICT DO NOTHING",
                    (EMPTY_ROOT,),
                )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the audit database {self.path}: {exc}") from exc
        self.index = IndexSql(self._run, self._run_many)

    # --- plumbing -------------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cur = self._db.execute(_pg(sql), tuple(params))
                return list(cur.fetchall()) if cur.description else []
            except psycopg.Error as exc:
                raise StoreError(f"audit database {self.path}: {exc}") from exc

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._db.cursor() as cur:
            cur.executemany(_pg(sql), rows)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self, lock: bool = False) -> tuple[int, bytes, int | None]:
        sql = "SELECT size, root, last_seq FROM state WHERE id = 0" + (" FOR UPDATE" if lock else "")
        row = self._db.execute(sql).fetchone()
        assert row is not None
        return int(row[0]), bytes(row[1]), row[2]

    # --- LogStore -----------------------------------------------------------------------------

    def size(self) -> int:
        """Number of integrated leaves."""
        with self._lock:
            return self._state()[0]

    def root(self) -> bytes:
        """RFC 6962 root at :meth:`size`."""
        with self._lock:
            return self._state()[1]

    def last_stream_seq(self) -> int | None:
        """Stream sequence of the last integrated entry, None when the log is empty."""
        with self._lock:
            return self._state()[2]

    def append(self, entries: Sequence[Entry]) -> Appended:
        """Sequence, integrate and index ``entries`` in one transaction (rules as
        :meth:`ccpipe.pipeline.audit.store.sqlite.SqliteLogStore.append`); raises :class:`StoreError`."""
        with self._lock:
            try:
                with self._db.transaction():
                    return self._append(entries)
            except psycopg.Error as exc:
                self.index.forget()
                raise StoreError(f"audit database {self.path}: batch not written: {exc}") from exc
            except BaseException:
                self.index.forget()
                raise

    def append_indexed(self, entries: Sequence[Entry], rows: Sequence[IndexRow]) -> Appended:
        """Log ``entries`` and index them with ``rows`` (matched by stream sequence) in one transaction."""
        with self._lock:
            self._pending = {r.seq: r for r in rows}
            try:
                return self.append(entries)
            finally:
                self._pending = {}

    def _append(self, entries: Sequence[Entry]) -> Appended:
        size, root, last_seq = self._state(lock=True)
        new: list[Entry] = []
        skipped = 0
        expect = None if last_seq is None else last_seq + 1
        for e in entries:
            if e.stream_seq is None:
                raise StoreError("an entry without a stream sequence cannot be logged")
            if last_seq is not None and e.stream_seq <= last_seq:
                row = self._db.execute("SELECT leaf_hash FROM leaves WHERE stream_seq = %s", (e.stream_seq,)).fetchone()
                if row is not None and bytes(row[0]) != e.leaf_hash:
                    raise StoreError(f"stream sequence {e.stream_seq} was logged with other bytes",
                                     hint="the stream was rewritten or another stream feeds this log; investigate")
                skipped += 1
                continue
            if expect is not None and e.stream_seq != expect:
                raise StoreError(f"stream sequence {e.stream_seq} follows {expect - 1}: the log would have a gap",
                                 hint="the audit consumer must read every message of the stream, in order")
            new.append(e)
            expect = e.stream_seq + 1
        if not new:
            return Appended(first_index=size, size=size, root=root, skipped=skipped)
        self._run_many(
            "INSERT INTO leaves (idx, stream_seq, event_id, leaf_hash, data, signature) VALUES (?, ?, ?, ?, ?, ?)",
            [(size + i, e.stream_seq, e.event_id, e.leaf_hash, e.data, e.signature) for i, e in enumerate(new)],
        )
        done = integrate(self.fetch_nodes, size, [e.leaf_hash for e in new])
        self._run_many("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                       [(lvl, idx, h) for (lvl, idx), h in done.nodes.items() if lvl > 0])
        self._db.execute("UPDATE state SET size = %s, root = %s, last_seq = %s WHERE id = 0",
                         (done.size, done.root, new[-1].stream_seq))
        self.index.write([self._pending.get(e.stream_seq or 0) or default_row(e) for e in new], size)
        return Appended(first_index=size, size=done.size, root=done.root, skipped=skipped)

    def get_nodes(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """The stored nodes among ``ids`` (level 0 read from ``leaves``), in two queries."""
        out: dict[NodeID, bytes] = {}
        with self._lock:
            leaves = [i for lvl, i in ids if lvl == 0]
            if leaves:
                for idx, h in self._db.execute("SELECT idx, leaf_hash FROM leaves WHERE idx = ANY(%s)", (leaves,)):
                    out[(0, int(idx))] = bytes(h)
            upper = [(lvl, i) for lvl, i in ids if lvl > 0]
            if upper:
                rows = self._db.execute(
                    "SELECT n.level, n.idx, n.hash FROM nodes n JOIN unnest(%s::int[], %s::bigint[]) AS w(l, i) "
                    "ON n.level = w.l AND n.idx = w.i",
                    ([lvl for lvl, _ in upper], [i for _, i in upper]),
                )
                for lvl, idx, h in rows:
                    out[(int(lvl), int(idx))] = bytes(h)
        return out

    def fetch_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of the given perfect nodes; raises :class:`StoreError` if one is missing."""
        got = self.get_nodes(ids)
        missing = [n for n in ids if n not in got]
        if missing:
            raise StoreError(f"audit database {self.path} lacks Merkle node(s) {missing[:3]}: it is damaged")
        return [got[n] for n in ids]

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[StoredLeaf]:
        """Leaf rows with ``start <= index < end`` in index order, exactly as stored (paged)."""
        stop = end if end is not None else 2**63 - 1
        at = start
        while at < stop:
            with self._lock:
                rows = self._db.execute(
                    "SELECT idx, stream_seq, event_id, leaf_hash, data, signature FROM leaves "
                    "WHERE idx >= %s AND idx < %s ORDER BY idx LIMIT %s", (at, stop, _PAGE)).fetchall()
            for idx, seq, eid, lh, data, sig in rows:
                yield StoredLeaf(int(idx), int(seq), eid, bytes(lh), bytes(data), sig)
            if len(rows) < _PAGE:
                return
            at = int(rows[-1][0]) + 1

    def indexes_of(self, event_id: str) -> list[int]:
        """Indexes of the leaves carrying ``event_id``."""
        return [int(r[0]) for r in self._run("SELECT idx FROM leaves WHERE event_id = ? ORDER BY idx", (event_id,))]

    def add_checkpoint(self, size: int, root: bytes, note: bytes) -> None:
        """Record a published checkpoint; raises :class:`StoreError` if one of that size with
        another root exists or the size exceeds the log."""
        with self._lock:
            try:
                with self._db.transaction():
                    have = self._state(lock=True)[0]
                    if size > have:
                        raise StoreError(f"checkpoint size {size} exceeds the log's {have} leaves")
                    row = self._db.execute("SELECT root FROM checkpoints WHERE size = %s", (size,)).fetchone()
                    if row is not None and bytes(row[0]) != root:
                        raise StoreError(f"a checkpoint of size {size} with another root is already recorded")
                    self._db.execute(
                        "INSERT INTO checkpoints (size, root, note) VALUES (%s, %s, %s) "
                        "ON CONFLICT (size) DO UPDATE SET note = excluded.note", (size, root, note))
            except psycopg.Error as exc:
                raise StoreError(f"audit database {self.path}: checkpoint not written: {exc}") from exc

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every recorded checkpoint, smallest first."""
        rows = self._run("SELECT size, root, note FROM checkpoints ORDER BY size", ())
        return [StoredCheckpoint(int(s), bytes(r), bytes(n)) for s, r, n in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint with the largest size, if any."""
        rows = self._run("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1", ())
        return StoredCheckpoint(int(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2])) if rows else None
