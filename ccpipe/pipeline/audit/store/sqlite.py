"""The embedded audit log store: one SQLite file in WAL mode (stdlib ``sqlite3``).

Tables: ``leaves`` (index, stream sequence, event id, leaf hash, canonical bytes,
signature header), ``nodes`` (every perfect Merkle node of level ≥ 1; level 0 is the leaf
hash), ``checkpoints`` (signed notes by tree size) and a one-row ``state`` (size, root,
last stream sequence).

Crash safety: :meth:`SqliteLogStore.append` runs one ``BEGIN IMMEDIATE`` … ``COMMIT`` per
batch, so a crash leaves the log at the previous batch; ``synchronous=FULL`` makes a
returned ``append`` durable, so a consumer may ack its messages right after it. A
redelivered message (sequence already logged) is skipped, so the consumer resumes simply by
re-reading from :meth:`~SqliteLogStore.last_stream_seq` + 1.

One instance per thread (sqlite3 connections are not shared); WAL lets readers in other
processes proceed while a batch is written. Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.errors import StoreError, StoreUnreadable
from ccpipe.pipeline.audit.integrate import integrate
from ccpipe.pipeline.audit.merkle import EMPTY_ROOT, NodeID
from ccpipe.pipeline.audit.store.interface import Appended, StoredCheckpoint, StoredLeaf

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    idx        INTEGER PRIMARY KEY,
    stream_seq INTEGER NOT NULL UNIQUE,
    event_id   TEXT,
    leaf_hash  BLOB NOT NULL,
    data       BLOB NOT NULL,
    signature  TEXT
);
CREATE INDEX IF NOT EXISTS leaves_event_id ON leaves(event_id);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    size     INTEGER NOT NULL,
    root     BLOB NOT NULL,
    last_seq INTEGER
);
INSERT OR IGNORE INTO state (id, size, root, last_seq) VALUES (0, 0, X'{empty}', NULL);
""".replace("{empty}", EMPTY_ROOT.hex())

Connect = Callable[[str], Any]
"""Opens a DB-API connection to a path; tests pass one that fails on purpose."""


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself, one transaction per batch.
    return sqlite3.connect(path, isolation_level=None)


def _blob(value: object) -> bytes:
    # SQLite columns are loosely typed: a tampered row may hold TEXT or a number where a
    # BLOB belongs. Read it as bytes so verification reports the damage instead of crashing.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


class SqliteLogStore:
    """A :class:`~ccpipe.pipeline.audit.store.interface.LogStore` in one SQLite file."""

    def __init__(self, path: Path | str, *, connect: Connect = _connect, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous={synchronous!r} is not one of FULL, NORMAL, EXTRA")
        self.path = str(path)
        try:
            self._db = connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnreadable(f"cannot open audit store {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> tuple[int, bytes, int | None]:
        row = self._db.execute("SELECT size, root, last_seq FROM state WHERE id = 0").fetchone()
        return int(row[0]), bytes(row[1]), row[2]

    def size(self) -> int:
        """Number of integrated leaves."""
        return self._state()[0]

    def root(self) -> bytes:
        """RFC 6962 root at :meth:`size`."""
        return self._state()[1]

    def last_stream_seq(self) -> int | None:
        """Stream sequence of the last integrated entry, None when the log is empty."""
        return self._state()[2]

    def append(self, entries: Sequence[Entry]) -> Appended:
        """Sequence and integrate ``entries`` in one transaction.

        Entries whose ``stream_seq`` is already logged are skipped (redelivery). Raises
        :class:`StoreError` (and writes nothing) if an entry has no sequence, if sequences
        would leave a gap or go backwards, if a redelivered entry's bytes differ from the
        logged ones, or if SQLite fails.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = self._append(entries)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._rolled_back()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"audit store {self.path}: batch not written: {exc}") from exc
        return result

    def _appended(self, first_index: int, new: Sequence[Entry]) -> None:
        """Called inside the batch's transaction with the entries just logged (hook for the index)."""

    def _rolled_back(self) -> None:
        """Called after a batch's transaction was rolled back (hook: drop cached state)."""

    def _append(self, entries: Sequence[Entry]) -> Appended:
        size, root, last_seq = self._state()
        new: list[Entry] = []
        skipped = 0
        expect = None if last_seq is None else last_seq + 1
        for e in entries:
            if e.stream_seq is None:
                raise StoreError("an entry without a stream sequence cannot be logged")
            if last_seq is not None and e.stream_seq <= last_seq:
                self._check_redelivery(e)
                skipped += 1
                continue
            if expect is not None and e.stream_seq != expect:
                raise StoreError(
                    f"stream sequence {e.stream_seq} follows {expect - 1}: the log would have a gap",
                    hint="the audit consumer must read every message of the stream, in order",
                )
            new.append(e)
            expect = e.stream_seq + 1
        if not new:
            return Appended(first_index=size, size=size, root=root, skipped=skipped)
        self._db.executemany(
            "INSERT INTO leaves (idx, stream_seq, event_id, leaf_hash, data, signature) VALUES (?, ?, ?, ?, ?, ?)",
            [(size + i, e.stream_seq, e.event_id, e.leaf_hash, e.data, e.signature) for i, e in enumerate(new)],
        )
        done = integrate(self.fetch_nodes, size, [e.leaf_hash for e in new])
        self._db.executemany(
            "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(lvl, idx, h) for (lvl, idx), h in done.nodes.items() if lvl > 0],
        )
        self._db.execute(
            "UPDATE state SET size = ?, root = ?, last_seq = ? WHERE id = 0",
            (done.size, done.root, new[-1].stream_seq),
        )
        self._appended(size, new)
        return Appended(first_index=size, size=done.size, root=done.root, skipped=skipped)

    def _check_redelivery(self, e: Entry) -> None:
        row = self._db.execute("SELECT idx, leaf_hash FROM leaves WHERE stream_seq = ?", (e.stream_seq,)).fetchone()
        if row is not None and bytes(row[1]) != e.leaf_hash:
            raise StoreError(
                f"stream sequence {e.stream_seq} was logged at index {row[0]} with other bytes",
                hint="the stream was rewritten or another stream feeds this log; stop and investigate",
            )

    def get_nodes(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """The stored nodes among ``ids`` (level 0 read from ``leaves``)."""
        out: dict[NodeID, bytes] = {}
        for level, idx in ids:
            if level == 0:
                row = self._db.execute("SELECT leaf_hash FROM leaves WHERE idx = ?", (idx,)).fetchone()
            else:
                row = self._db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, idx)).fetchone()
            if row is not None:
                out[(level, idx)] = _blob(row[0])
        return out

    def fetch_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of the given perfect nodes; raises :class:`StoreError` if one is missing."""
        got = self.get_nodes(ids)
        missing = [n for n in ids if n not in got]
        if missing:
            raise StoreError(f"audit store {self.path} lacks Merkle node(s) {missing[:3]}: it is damaged")
        return [got[n] for n in ids]

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[StoredLeaf]:
        """Leaf rows with ``start <= index < end`` in index order, exactly as stored."""
        cur = self._db.execute(
            "SELECT idx, stream_seq, event_id, leaf_hash, data, signature FROM leaves "
            "WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end if end is not None else 2**63 - 1),
        )
        for idx, seq, eid, lh, data, sig in cur:
            yield StoredLeaf(int(idx), int(seq), eid, _blob(lh), _blob(data), sig)

    def leaf(self, index: int) -> StoredLeaf | None:
        """The leaf at ``index``, if stored."""
        return next(self.leaves(index, index + 1), None)

    def indexes_of(self, event_id: str) -> list[int]:
        """Indexes of the leaves carrying ``event_id``."""
        rows = self._db.execute("SELECT idx FROM leaves WHERE event_id = ? ORDER BY idx", (event_id,))
        return [int(r[0]) for r in rows]

    def add_checkpoint(self, size: int, root: bytes, note: bytes) -> None:
        """Record a published checkpoint; raises :class:`StoreError` if one of that size with
        another root exists or the size exceeds the log."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if size > self._state()[0]:
                    raise StoreError(f"checkpoint size {size} exceeds the log's {self._state()[0]} leaves")
                row = self._db.execute("SELECT root FROM checkpoints WHERE size = ?", (size,)).fetchone()
                if row is not None and bytes(row[0]) != root:
                    raise StoreError(f"a checkpoint of size {size} with another root is already recorded")
                self._db.execute(
                    "INSERT OR REPLACE INTO checkpoints (size, root, note) VALUES (?, ?, ?)",
                    (size, root, note),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"audit store {self.path}: checkpoint not written: {exc}") from exc

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every recorded checkpoint, smallest first."""
        rows = self._db.execute("SELECT size, root, note FROM checkpoints ORDER BY size")
        return [StoredCheckpoint(int(s), bytes(r), bytes(n)) for s, r, n in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint with the largest size, if any (one row read, however many exist)."""
        row = self._db.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), bytes(row[2]))
