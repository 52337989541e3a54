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

Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from ccpipe.pipeline.audit.checkpoint import Checkpoint, open_checkpoint
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.event_signing import Keyring, SignatureCheck, SignatureVerdict, check_event_signature
from ccpipe.pipeline.audit.merkle import CompactRange, NodeID, leaf_hash
from ccpipe.pipeline.audit.store.interface import LogStore, StoredLeaf

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
