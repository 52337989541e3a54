"""The embedded audit database: the SQLite Merkle log plus its query index, in one file.

:class:`SqliteAudit` extends :class:`~ccpipe.pipeline.audit.store.sqlite.SqliteLogStore` with the
index tables of :mod:`.index_sql`; :meth:`SqliteAudit.append_indexed` writes a batch's
leaves, Merkle nodes, index rows and the new stream position in one ``BEGIN IMMEDIATE``
transaction, so after a crash the index is exactly as far as the log — never ahead, never
behind, never double.

The connection may be used from several threads (the HTTP API calls through
``asyncio.to_thread``); a lock serialises the calls. Imports :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.errors import StoreError
from ccpipe.pipeline.audit.fields import extract
from ccpipe.pipeline.audit.store.index_sql import IndexQueries, IndexRow, IndexSql, index_ddl
from ccpipe.pipeline.audit.store.interface import Appended
from ccpipe.pipeline.audit.store.sqlite import SqliteLogStore

PAGE_CACHE_KIB = 8192
"""The index connection's SQLite page cache (KiB)."""
WAL_AUTOCHECKPOINT_PAGES = 10_000
"""WAL pages after which a commit copies the WAL back into the database file."""


def _connect_shared(path: str) -> sqlite3.Connection:
    # check_same_thread=False: calls are serialised by SqliteAudit's lock instead.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def default_row(entry: Entry) -> IndexRow:
    """The index row of an entry appended without a signature check: flagged, never ``valid``."""
    return IndexRow.of(entry.stream_seq or 0, extract(entry.data), "unknown_key" if entry.signature else "unsigned")


class SqliteAudit(IndexQueries, SqliteLogStore):
    """Log store and :class:`~ccpipe.pipeline.audit.query.AuditIndex` over one SQLite file."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, connect=_connect_shared, synchronous=synchronous)
        self._lock = threading.RLock()
        self._pending: dict[int, IndexRow] = {}
        try:
            # The index's B-trees take random inserts (digests, keys): the page cache keeps their
            # upper levels in memory as the log grows. It is bounded to 8 MiB because it lives in
            # the process that runs the audit log (``ccpipe up``): at 64 MiB it filled as the index
            # grew, and that process's RSS rose by half over a few hundred workloads.
            self._db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            # Each batch dirties pages all over those B-trees, and the default WAL auto-checkpoint
            # (1,000 pages) copied them back into the file after nearly every commit: at 10,000
            # pages (~40 MiB of WAL) a page rewritten by many batches is copied once, which cut the
            # commit time by a third. Durability is unchanged: the WAL is synced per commit.
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._db.execute("BEGIN IMMEDIATE")
            for stmt in index_ddl("BLOB", "INTEGER", " WITHOUT ROWID"):
                self._db.execute(stmt)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the audit index in {self.path}: {exc}") from exc
        self.index = IndexSql(self._run, self._run_many)

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                rows: list[tuple[Any, ...]] = self._db.execute(sql, tuple(params)).fetchall()
                return rows
            except sqlite3.Error as exc:
                raise StoreError(f"audit index {self.path}: {exc}") from exc

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    # --- write side -------------------------------------------------------------------------

    def append_indexed(self, entries: Sequence[Entry], rows: Sequence[IndexRow]) -> Appended:
        """Log ``entries`` and index them with ``rows`` (matched by stream sequence) in one
        transaction; entries already logged are skipped with their rows. Raises
        :class:`StoreError` and writes nothing on failure."""
        with self._lock:
            self._pending = {r.seq: r for r in rows}
            try:
                return self.append(entries)
            finally:
                self._pending = {}

    def append(self, entries: Sequence[Entry]) -> Appended:
        """Log and index ``entries`` (see :meth:`SqliteLogStore.append`)."""
        with self._lock:
            return super().append(entries)

    def _appended(self, first_index: int, new: Sequence[Entry]) -> None:
        rows = [self._pending.get(e.stream_seq or 0) or default_row(e) for e in new]
        self.index.write(rows, first_index)

    def _rolled_back(self) -> None:
        self.index.forget()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            super().close()
