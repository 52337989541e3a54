"""The contract every audit log store implements.

Words as in Tessera: *sequence* gives each entry the next index, *integrate* extends the
Merkle tree, *publish* signs and records a checkpoint. A store sequences and integrates a
batch in one step (:meth:`LogStore.append`); publishing is separate
(:func:`ccpipe.pipeline.audit.publisher.publish_checkpoint`).

Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.merkle import NodeID


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    """One leaf as the store holds it."""

    index: int
    stream_seq: int
    event_id: str | None
    leaf_hash: bytes
    data: bytes
    signature: str | None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint the log published."""

    size: int
    root: bytes
    note: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """What one :meth:`LogStore.append` did."""

    first_index: int
    """Index given to the first new entry (= the old size)."""
    size: int
    """Tree size after the batch."""
    root: bytes
    """Root at ``size``."""
    skipped: int
    """Entries already in the log (a redelivery), left out."""


class LogStore(Protocol):
    """Persistence of one Merkle log.

    Implementations MUST make :meth:`append` atomic: after a crash the store holds either
    the whole batch (leaves, nodes, new size) or none of it. They MUST refuse an entry whose
    stream sequence would leave a gap, and MUST skip (not duplicate) entries whose sequence
    is already logged, failing if their bytes differ.
    """

    def size(self) -> int:
        """Number of integrated leaves."""
        ...

    def root(self) -> bytes:
        """RFC 6962 root at :meth:`size`."""
        ...

    def last_stream_seq(self) -> int | None:
        """Stream sequence of the last integrated entry (where a consumer resumes)."""
        ...

    def append(self, entries: Sequence[Entry]) -> Appended:
        """Sequence and integrate ``entries`` (each with a ``stream_seq``) in one transaction."""
        ...

    def fetch_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of perfect nodes (level 0 = leaf hashes); raises if one is missing."""
        ...

    def get_nodes(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """The stored nodes among ``ids``; missing ones are left out."""
        ...

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[StoredLeaf]:
        """Stored leaf rows with ``start <= index < end``, in index order, as stored."""
        ...

    def indexes_of(self, event_id: str) -> list[int]:
        """Indexes of the leaves carrying ``event_id`` (usually one)."""
        ...

    def add_checkpoint(self, size: int, root: bytes, note: bytes) -> None:
        """Record a published checkpoint."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every recorded checkpoint, smallest size first."""
        ...
