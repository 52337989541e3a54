"""``audit verify``: check a stored log against a signed checkpoint and name the damage.

:func:`verify_log` trusts nothing in the store except what the keyring can check: the
checkpoint note (the log's key), older checkpoints recorded in the store (same key) and
the event signatures (component keys). It recomputes the whole tree from the stored leaf
bytes in one pass, O(n) time and O(log n) memory, and reports the first bad index:

1. the checkpoint must verify with one of ``keyring.log_keys``;
2. leaf rows ``0 … size-1`` must all exist (**deleted** otherwise);
3. each row's bytes must hash to its stored leaf hash (**modified** otherwise);
4. stream sequences must run on without gaps (**deleted**) and in order (**reordered**
   when the misplaced sequence belongs to the log, **inserted** when it does not);
5. every stored Merkle node must match the recomputed one (**modified**: the leaf and its
   hash were both rewritten; the first leaf under the node whose signature fails, else the
   node's first leaf, is named);
6. every recorded signed checkpoint, and finally the given one, must match the recomputed
   root at its size (**root-mismatch**, localised to the leaves since the last good one).

Detection is certain (step 6 alone catches any change to the first ``size`` leaves); the
*classification* is best effort, since whoever can write the store can make one kind of
damage look like another. Signatures that are not valid are listed as flags, separately
from damage: a forged event can be logged faithfully.

Two more checks cover what no checkpoint does:

* :func:`verify_tail` — the leaves after the checkpoint (the next one will sign them) must
  run on without gaps and be, byte for byte and header for header, the stream's messages;
* :func:`verify_index` — the query index that ``audit query``, the HTTP API and the web page
  answer from must be exactly what the ingest's own row preparation makes of the leaves;
  every differing cell, missing row and extra row is named.

Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ccpipe.pipeline.audit.checkpoint import Checkpoint, open_checkpoint
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.ingest import KeyringStates, StreamMessage, prepare_rows
from ccpipe.pipeline.audit.merkle import CompactRange, NodeID, leaf_hash
from ccpipe.pipeline.audit.store.index_sql import EVENT_COLUMNS, IndexSql, table_rows
from ccpipe.pipeline.audit.store.interface import LogStore, StoredLeaf
from ccpipe.pipeline.event_trust import SignatureCheck, SignatureVerdict, check_event_signature

_NODE_BATCH = 4096


class Damage(StrEnum):
    """What happened to the log, as far as the evidence tells."""

    CHECKPOINT = "checkpoint"
    DELETED = "deleted"
    MODIFIED = "modified"
    INSERTED = "inserted"
    REORDERED = "reordered"
    ROOT_MISMATCH = "root-mismatch"


@dataclass(frozen=True, slots=True)
class Finding:
    """The first damage found: where and what."""

    index: int | None
    damage: Damage
    detail: str


@dataclass(frozen=True, slots=True)
class SignatureFlag:
    """A logged event whose signature is not valid."""

    index: int
    event_id: str | None
    check: SignatureCheck


@dataclass(frozen=True, slots=True)
class LogReport:
    """The outcome of :func:`verify_log`."""

    checkpoint: Checkpoint | None
    leaves_checked: int
    finding: Finding | None
    flags: list[SignatureFlag] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the log matches the checkpoint (flags do not count as damage)."""
        return self.finding is None

    @property
    def first_bad_index(self) -> int | None:
        """Index of the first damaged leaf, if one could be named."""
        return self.finding.index if self.finding else None


class _Walk:
    """State of one verification pass."""

    def __init__(self, store: LogStore, keyring: Keyring, checkpoint: Checkpoint) -> None:
        self.store, self.keyring, self.cp = store, keyring, checkpoint
        self.cr = CompactRange()
        self.flags: list[SignatureFlag] = []
        self.verdicts: dict[int, SignatureVerdict] = {}
        self.pending: dict[NodeID, bytes] = {}
        self.finding: Finding | None = None
        # Older signed checkpoints recorded in the store localise a root mismatch.
        self.signed: dict[int, bytes] = {}
        for sc in store.checkpoints():
            try:
                old = open_checkpoint(sc.note, keyring.log_keys, origin=checkpoint.origin)
            except CheckpointError:
                continue
            if 0 < old.size <= checkpoint.size:
                self.signed[old.size] = old.root
        self.signed[checkpoint.size] = checkpoint.root
        self.last_good = 0

    def fail(self, index: int | None, damage: Damage, detail: str) -> None:
        if self.finding is None:
            self.finding = Finding(index, damage, detail)

    def keep_node(self, level: int, index: int, h: bytes) -> None:
        if level > 0:
            self.pending[(level, index)] = h

    def compare_nodes(self) -> None:
        if not self.pending or self.finding:
            self.pending.clear()
            return
        stored = self.store.get_nodes(sorted(self.pending))
        for (level, idx), h in sorted(self.pending.items()):
            if stored.get((level, idx)) != h:
                first, last = idx << level, ((idx + 1) << level) - 1
                bad = [i for i in range(first, last + 1) if self.verdicts.get(i) not in (None, SignatureVerdict.VALID)]
                where = bad[0] if bad else first
                why = "its signature fails" if bad else "the first leaf under it"
                self.fail(
                    where,
                    Damage.MODIFIED,
                    f"stored Merkle node ({level}, {idx}) over leaves {first}–{last} no longer matches "
                    f"their bytes: leaf and hash were rewritten (leaf {where} named: {why})",
                )
                break
        self.pending.clear()

    def check_root(self) -> None:
        want = self.signed.get(self.cr.size)
        if want is None or self.finding:
            return
        if self.cr.root() != want:
            self.fail(
                self.last_good,
                Damage.ROOT_MISMATCH,
                f"leaves {self.last_good}–{self.cr.size - 1} differ from what the signed checkpoint of "
                f"size {self.cr.size} committed to",
            )
        self.last_good = self.cr.size


def _peekable(rows: Iterator[StoredLeaf]) -> Iterator[tuple[StoredLeaf, StoredLeaf | None]]:
    prev = next(rows, None)
    for row in rows:
        assert prev is not None
        yield prev, row
        prev = row
    if prev is not None:
        yield prev, None


def verify_log(store: LogStore, checkpoint_note: bytes, keyring: Keyring) -> LogReport:
    """Check ``store`` against a signed checkpoint; see the module docstring for the steps.

    Never raises for damage: it is reported in :attr:`LogReport.finding`.
    """
    # (1)
    try:
        cp = open_checkpoint(checkpoint_note, keyring.log_keys)
    except CheckpointError as exc:
        return LogReport(None, 0, Finding(None, Damage.CHECKPOINT, exc.message))
    w = _Walk(store, keyring, cp)
    prev_seq: int | None = None
    first_seq: int | None = None
    for row, nxt in _peekable(store.leaves(0, cp.size)):
        i = w.cr.size
        check = check_event_signature(keyring, row.data, row.signature)
        w.verdicts[row.index] = check.verdict
        if check.verdict is not SignatureVerdict.VALID:
            w.flags.append(SignatureFlag(row.index, row.event_id, check))
        if w.finding:
            continue  # keep collecting signature flags; the tree is already known bad
        # (2)
        if row.index != i:
            w.fail(i, Damage.DELETED, f"there is no leaf {i}: the rows jump from {i - 1} to {row.index}")
            continue
        # (3)
        h = leaf_hash(row.data)
        if h != row.leaf_hash:
            w.fail(i, Damage.MODIFIED, f"leaf {i}'s bytes do not hash to its stored leaf hash")
            continue
        # (4)
        first_seq = row.stream_seq if first_seq is None else first_seq
        if prev_seq is not None and row.stream_seq != prev_seq + 1:
            # A gap is a deletion when the stream carries on from the new sequence; a row
            # whose successor does not follow it was put here from elsewhere.
            carries_on = nxt is None or nxt.index >= cp.size or nxt.stream_seq == row.stream_seq + 1
            if row.stream_seq > prev_seq + 1 and carries_on:
                w.fail(
                    i,
                    Damage.DELETED,
                    f"stream sequences {prev_seq + 1}–{row.stream_seq - 1} are missing before leaf {i}",
                )
            elif first_seq <= row.stream_seq < first_seq + cp.size:
                w.fail(
                    i,
                    Damage.REORDERED,
                    f"leaf {i} holds stream sequence {row.stream_seq} where {prev_seq + 1} belongs: leaves were moved",
                )
            else:
                w.fail(
                    i,
                    Damage.INSERTED,
                    f"leaf {i} holds stream sequence {row.stream_seq}, which the log "
                    f"never had, where {prev_seq + 1} belongs: a leaf was inserted",
                )
            continue
        prev_seq = row.stream_seq
        # (5) and (6)
        w.cr.append(h, w.keep_node)
        if len(w.pending) >= _NODE_BATCH:
            w.compare_nodes()
        if w.cr.size in w.signed:
            w.compare_nodes()
            w.check_root()
    w.compare_nodes()
    if w.finding is None and w.cr.size < cp.size:
        w.fail(w.cr.size, Damage.DELETED, f"the store holds {w.cr.size} leaves; the checkpoint covers {cp.size}")
    w.check_root()
    return LogReport(cp, w.cr.size, w.finding, w.flags)


# --- the leaves after the last checkpoint ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TailReport:
    """The outcome of :func:`verify_tail`: the leaves no checkpoint covers yet."""

    first: int
    """Index of the first leaf after the checkpoint (= its size)."""
    size: int
    """The store's size: leaves ``first … size-1`` are the tail."""
    finding: Finding | None
    against_stream: bool
    """False when there was no stream to compare with: the tail's bytes are then unchecked."""

    @property
    def leaves(self) -> int:
        """How many leaves the tail holds."""
        return self.size - self.first


def verify_tail(store: LogStore, after: int, stream: Mapping[int, StreamMessage] | None) -> TailReport:
    """Check the stored leaves from index ``after`` (a checkpoint's size) on, which no signed
    checkpoint covers: rows without gaps, bytes that hash to their leaf hash, stream sequences
    that run on from the checkpointed part and, when ``stream`` (messages by sequence) is given,
    the very bytes and signature header the stream holds at that sequence."""
    prev_seq = next((leaf.stream_seq for leaf in store.leaves(after - 1, after)), None) if after else None
    i = after
    for row in store.leaves(after):
        finding = _tail_problem(row, i, prev_seq, stream)
        if finding is not None:
            return TailReport(after, store.size(), finding, stream is not None)
        prev_seq, i = row.stream_seq, i + 1
    if i < store.size():
        finding = Finding(i, Damage.DELETED, f"the store's size is {store.size()} but its rows end at leaf {i - 1}")
        return TailReport(after, store.size(), finding, stream is not None)
    return TailReport(after, i, None, stream is not None)


def _tail_problem(row: StoredLeaf, i: int, prev_seq: int | None,
                  stream: Mapping[int, StreamMessage] | None) -> Finding | None:
    if row.index != i:
        return Finding(i, Damage.DELETED, f"there is no leaf {i}: the rows jump from {i - 1} to {row.index}")
    if leaf_hash(row.data) != row.leaf_hash:
        return Finding(i, Damage.MODIFIED, f"leaf {i}'s bytes do not hash to its stored leaf hash")
    if prev_seq is not None and row.stream_seq != prev_seq + 1:
        return Finding(i, Damage.DELETED if row.stream_seq > prev_seq + 1 else Damage.REORDERED,
                       f"leaf {i} holds stream sequence {row.stream_seq} where {prev_seq + 1} belongs")
    if stream is None:
        return None
    msg = stream.get(row.stream_seq)
    if msg is None:
        return Finding(i, Damage.INSERTED, f"leaf {i} claims stream sequence {row.stream_seq}, which the stream "
                                           "does not hold: it was never published")
    if msg.data != row.data:
        return Finding(i, Damage.MODIFIED, f"leaf {i}'s bytes differ from stream message {row.stream_seq}'s")
    if msg.signature != row.signature:
        return Finding(i, Damage.MODIFIED, f"leaf {i}'s signature header differs from stream message "
                                           f"{row.stream_seq}'s")
    return None


# --- the query index ------------------------------------------------------------------------

_TERM_BUCKET = 4096
"""Stream sequences per bucket of the search-term comparison (see :func:`verify_index`)."""


class IndexedLogStore(LogStore, Protocol):
    """A log store holding the query index beside its leaves (the SQLite and PostgreSQL audit stores)."""

    index: IndexSql


@dataclass(frozen=True, slots=True)
class IndexDifference:
    """One way the stored query index differs from the index rebuilt from the leaves."""

    table: str
    where: str
    """The event (id and stream sequence) or workload the row is about."""
    column: str | None
    """The differing column; None when the whole row is missing or extra."""
    stored: str | None
    """What the index holds (None: no such row)."""
    expected: str | None
    """What the leaves give (None: no such row)."""

    def __str__(self) -> str:
        if self.column is not None:
            return f"{self.where}: {self.column} is {self.stored} in the index; the leaf gives {self.expected}"
        if self.stored is None:
            return f"{self.where}: the index lacks its {self.table} row {self.expected}"
        return f"{self.where}: the index holds an {self.table} row {self.stored} that no leaf gives"


@dataclass(slots=True)
class IndexReport:
    """The outcome of :func:`verify_index`."""

    rows_checked: int = 0
    differences: list[IndexDifference] = field(default_factory=list)
    unlisted: int = 0
    """Differences found beyond the listed ones (at least this many: past the list, a range of
    sequences whose search terms differ counts once)."""

    @property
    def ok(self) -> bool:
        """True when the stored index is exactly the rebuild."""
        return not self.differences

    def add(self, diff: IndexDifference, limit: int) -> None:
        """Record ``diff``; past ``limit`` ones only count them."""
        if len(self.differences) < limit:
            self.differences.append(diff)
        else:
            self.unlisted += 1


def _term_digest(kind: str, value: str, seq: int) -> int:
    # Length-prefixed, so no two terms encode alike; 128 bits, so no sum of them collides by chance.
    text = f"{len(kind)}:{kind}{len(value)}:{value}{seq}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "big")


class _IndexCheck:
    """State of one :func:`verify_index` pass."""

    def __init__(self, store: IndexedLogStore, limit: int) -> None:
        self.store, self.limit = store, limit
        self.report = IndexReport()
        self.stored_events = _Peek(store.index.event_rows())
        # Search terms are keyed (kind, value, seq), so they cannot be read in leaf order without a
        # scan per page: both sides are summed per bucket of sequences, and only a bucket whose
        # sums differ is read whole to name the difference.
        self.stored_buckets: dict[int, tuple[int, int]] = {}
        for kind, value, seq in store.index.term_rows():
            count, total = self.stored_buckets.get(seq // _TERM_BUCKET, (0, 0))
            self.stored_buckets[seq // _TERM_BUCKET] = (count + 1, (total + _term_digest(kind, value, seq)) % 2**128)
        self.bucket: int | None = None
        self.bucket_terms: set[tuple[str, str, int]] = set()
        self.event_ids: dict[int, str] = {}
        """Event ids of the sequences still to be named (those of the open term bucket on)."""
        self.inherited: dict[str, set[tuple[str, str]]] = {}
        self.workload_terms: set[tuple[str, str, str]] = set()
        self.spans: dict[str, tuple[int, int]] = {}

    def where(self, seq: int, event_id: str | None = None) -> str:
        eid = event_id if event_id is not None else self.event_ids.get(seq)
        return f"event {eid} (seq {seq})" if eid else f"seq {seq} (no leaf)"

    def columns(self, seq: int, stored: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
        for column, have, want in zip(EVENT_COLUMNS, stored, expected, strict=True):
            if have == want:
                continue
            have_fields, want_fields = (_json_object(have), _json_object(want)) if column == "fields" else (None, None)
            if have_fields is None or want_fields is None:
                self.diff("idx_events", self.where(seq), column, have, want)
                continue
            for name in sorted(have_fields.keys() | want_fields.keys()):  # the display field, not the whole JSON
                if have_fields.get(name) != want_fields.get(name):
                    self.diff("idx_events", self.where(seq), f"fields.{name}", have_fields.get(name),
                              want_fields.get(name))

    def diff(self, table: str, where: str, column: str | None, stored: object, expected: object) -> None:
        self.report.add(IndexDifference(table, where, column, None if stored is None else repr(stored),
                                        None if expected is None else repr(expected)), self.limit)

    def inherited_terms(self, workload_id: str) -> set[tuple[str, str]]:
        return self.inherited.setdefault(workload_id, set())

    def events(self, expected: list[tuple[Any, ...]]) -> None:
        for row in expected:
            seq = int(row[0])
            while (head := self.stored_events.peek()) is not None and head[0] < seq:
                self.diff("idx_events", self.where(head[0], head[2]), None, next(self.stored_events), None)
            if head is None or head[0] != seq:
                self.diff("idx_events", self.where(seq), None, None, row)
                continue
            self.columns(seq, next(self.stored_events), row)
            self.report.rows_checked += 1

    def terms(self, expected: list[tuple[str, str, int]]) -> None:
        for term in expected:
            bucket = term[2] // _TERM_BUCKET
            if bucket != self.bucket:
                self.close_bucket()
                self.bucket = bucket
            self.bucket_terms.add(term)

    def close_bucket(self) -> None:
        if self.bucket is None:
            return
        total = sum(_term_digest(*t) for t in self.bucket_terms) % 2**128
        if self.stored_buckets.pop(self.bucket, None) != (len(self.bucket_terms), total):
            self.name_terms(self.bucket, self.bucket_terms)
        done = (self.bucket + 1) * _TERM_BUCKET
        self.event_ids = {seq: eid for seq, eid in self.event_ids.items() if seq >= done}
        self.bucket, self.bucket_terms = None, set()

    def name_terms(self, bucket: int, expected: set[tuple[str, str, int]]) -> None:
        if len(self.report.differences) >= self.limit:
            self.report.unlisted += 1  # naming takes a scan of the terms: not past the listed ones
            return
        stored = self.store.index.term_rows_between(bucket * _TERM_BUCKET, (bucket + 1) * _TERM_BUCKET - 1)
        for kind, value, seq in sorted(expected - stored, key=lambda t: (t[2], t[0], t[1])):
            self.diff("idx_terms", self.where(seq), None, None, f"{kind}={value}")
        for kind, value, seq in sorted(stored - expected, key=lambda t: (t[2], t[0], t[1])):
            self.diff("idx_terms", self.where(seq), None, f"{kind}={value}", None)

    def finish(self) -> IndexReport:
        for stored in self.stored_events:
            self.diff("idx_events", self.where(stored[0], stored[2]), None, stored, None)
        self.close_bucket()
        for bucket in sorted(self.stored_buckets):  # terms of sequences no leaf has
            self.name_terms(bucket, set())
        stored_terms, stored_spans = self.store.index.workload_rows()
        for wl, kind, value in sorted(self.workload_terms ^ stored_terms):
            held = (wl, kind, value) in stored_terms
            self.diff("idx_workload_terms", f"workload {wl}", None, f"{kind}={value}" if held else None,
                      None if held else f"{kind}={value}")
        for wl in sorted(self.spans.keys() | stored_spans.keys()):
            have, want = stored_spans.get(wl), self.spans.get(wl)
            if have != want:
                self.diff("idx_workloads", f"workload {wl}", "first_seq, last_seq" if have and want else None,
                          have, want)
        return self.report


def _json_object(text: object) -> dict[str, Any] | None:
    try:
        value = json.loads(str(text))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class _Peek(Iterator[tuple[Any, ...]]):
    """An iterator of rows that can look at its next row without taking it."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self._rows, self._next = rows, next(rows, None)

    def peek(self) -> tuple[Any, ...] | None:
        return self._next

    def __next__(self) -> tuple[Any, ...]:
        if self._next is None:
            raise StopIteration
        row, self._next = self._next, next(self._rows, None)
        return row


def verify_index(store: IndexedLogStore, keyring: Keyring, *, batch: int = 1000, limit: int = 200) -> IndexReport:
    """Rebuild the query index from the store's leaves with the ingest's own row preparation
    (:func:`~ccpipe.pipeline.audit.ingest.prepare_rows`, :func:`~.store.index_sql.table_rows`) and
    compare it, row by row, with the index ``audit query``, the API and the web page answer from.

    Each difference is named (event id and sequence or workload, column, stored and expected);
    the first ``limit`` are listed, the rest counted. Time O(n), memory O(workloads + batch).
    The leaves themselves are taken as they are: check them first (:func:`verify_log`).
    """
    check = _IndexCheck(store, limit)
    states = KeyringStates(keyring)
    leaves = store.leaves()
    while chunk := list(itertools.islice(leaves, batch)):
        rows = prepare_rows(states, [StreamMessage(leaf.stream_seq, leaf.data, leaf.signature) for leaf in chunk])
        check.event_ids.update((r.seq, r.event_id) for r in rows)
        tables = table_rows(rows, chunk[0].index, check.inherited_terms)
        check.events(tables.events)
        check.terms(tables.terms)
        check.workload_terms.update(tables.workload_terms)
        for wl, (first, last) in tables.workloads.items():
            check.spans[wl] = (check.spans.get(wl, (first, last))[0], last)
    return check.finish()
