"""The API's read side: answers over an audit index and the Merkle log store. Synchronous.

:class:`AuditReader` turns index rows into response models and builds proofs from the log
store: an event's inclusion proof is always against the **latest signed checkpoint**, and its
``leaf`` is read from the log (the bytes that were hashed), not from the index, so the proof
is about what the log holds. Database handles are not thread-safe, so the HTTP layer runs
every call of one reader on one worker thread (:class:`~ccpipe.pipeline.audit.http.app.ReaderThread`).

Imports :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from ccpipe.pipeline.audit.errors import NotCovered, StoreError
from ccpipe.pipeline.audit.http.custody import chain_of_custody
from ccpipe.pipeline.audit.http.errors import BadRequest, NotFound
from ccpipe.pipeline.audit.http.models import (
    ConsistencyProof,
    EventDetail,
    EventPage,
    EventSummary,
    ImageRuns,
    Journey,
    KeyRecipients,
    Overview,
    ProofDocument,
    WorkloadList,
)
from ccpipe.pipeline.audit.http.overview import SCAN, OverviewFilter, matches, summarize
from ccpipe.pipeline.audit.merkle import NodeID
from ccpipe.pipeline.audit.proofs import consistency_proof, inclusion_proof, proof_document
from ccpipe.pipeline.audit.query import AuditIndex, EventFilter, IndexedEvent
from ccpipe.pipeline.audit.store.interface import StoredCheckpoint, StoredLeaf


class LogReader(Protocol):
    """What the API reads of the Merkle log (a subset of :class:`~ccpipe.pipeline.audit.store.interface.LogStore`)."""

    def size(self) -> int:
        """Number of leaves in the log."""
        ...

    def fetch_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of perfect nodes; raises if one is missing."""
        ...

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[StoredLeaf]:
        """Stored leaves with ``start <= index < end``."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every recorded checkpoint, smallest size first."""
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The largest recorded checkpoint (one row read: checkpoints accumulate, two a second)."""
        ...


class AuditReader:
    """Answers every API question from ``index`` and ``log``.

    ``log_key`` gives the C2SP verifier key of the log that signed a checkpoint note (put into
    proof documents): a fixed string, or a function of the note (a log whose key rotated).
    """

    def __init__(self, index: AuditIndex, log: LogReader, log_key: str | Callable[[bytes], str]) -> None:
        self.index = index
        self.log = log
        self._log_key = log_key

    def log_public_key(self, note: bytes) -> str:
        """The verifier key of the log key that signed ``note``."""
        return self._log_key if isinstance(self._log_key, str) else self._log_key(note)

    def events(self, f: EventFilter) -> EventPage:
        """One page of events matching ``f``; raises what the index raises for a bad filter."""
        rows = self.index.query(f)
        nxt = rows[-1].seq if rows and len(rows) >= f.limit else None
        return EventPage(events=[EventSummary.of(e) for e in rows], next_after_seq=nxt)

    def journey(self, workload_id: str) -> Journey:
        """The chain of custody of a workload; raises :class:`NotFound` if it has no event."""
        rows = self.index.journey(workload_id)
        if not rows:
            raise NotFound(f"workload {workload_id} has no events in the trail",
                           hint="search for part of its name: GET /api/v1/workloads?search=…")
        return Journey(workload_id=workload_id, stages=chain_of_custody(rows),
                       events=[EventSummary.of(e) for e in rows])

    def key_recipients(self, resource: str) -> KeyRecipients:
        """Every release of the KBS resource ``resource`` (an empty list: nobody got it)."""
        return KeyRecipients(resource=resource,
                             releases=[EventSummary.of(e) for e in self.index.key_recipients(resource)])

    def image_runs(self, image_digest: str) -> ImageRuns:
        """Everything that ran ``image_digest`` (empty lists: nothing ran it)."""
        rows = self.index.runs_of_image(image_digest)
        workloads = list(dict.fromkeys(e.workload_id for e in rows))
        return ImageRuns(image_digest=image_digest, workloads=workloads, events=[EventSummary.of(e) for e in rows])

    def workloads(self, search: str, limit: int) -> WorkloadList:
        """Workload ids containing ``search``, most recently active first."""
        return WorkloadList(workloads=self.index.workloads(search, limit))

    def overview(self, f: OverviewFilter) -> Overview:
        """The dashboard: the latest ``f.limit`` of the :data:`~.overview.SCAN` most recently active
        workloads that match ``f``, and the latest refusals (denied keys, rejected attestations)."""
        summaries = []
        recent = self.index.workloads("", SCAN)
        for wl in recent:
            s = summarize(wl, self.index.journey(wl))
            if s is not None and matches(s, f):
                summaries.append(s)
                if len(summaries) == f.limit:
                    break

        def refusals(event_type: str) -> list[EventSummary]:
            rows = self.index.query(EventFilter(event_type=event_type, tee=f.tee, node_id=f.node_id, since=f.since,
                                                until=f.until, limit=f.limit, newest_first=True))
            return [EventSummary.of(e) for e in rows]

        return Overview(workloads=summaries, denied_keys=refusals("key.denied"),
                        rejected_attestations=refusals("attestation.rejected"), scanned=len(recent))

    def _indexed(self, event_id: str) -> IndexedEvent:
        row = self.index.event(event_id)
        if row is None:
            raise NotFound(f"event {event_id} is not in the trail")
        return row

    def event(self, event_id: str) -> EventDetail:
        """The indexed event and its canonical bytes; raises :class:`NotFound` naming the id."""
        row = self._indexed(event_id)
        try:
            decoded = json.loads(row.raw)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        return EventDetail(event=EventSummary.of(row), raw=base64.b64encode(row.raw).decode(),
                           canonical=decoded if isinstance(decoded, dict) else None)

    def latest_checkpoint(self) -> StoredCheckpoint:
        """The largest signed checkpoint; raises :class:`NotFound` if the log signed none yet."""
        latest = self.log.latest_checkpoint()
        if latest is None:
            raise NotFound("the log has not published a checkpoint yet",
                           hint="the audit service signs one at least every second while events arrive")
        return latest

    def proof(self, event_id: str) -> ProofDocument:
        """The DESIGN.md proof document of ``event_id`` against the latest checkpoint.

        Raises :class:`NotFound` for an unknown event, :class:`NotCovered` when the latest
        checkpoint does not cover it yet, :class:`StoreError` when the log lacks its leaf.
        """
        row = self._indexed(event_id)
        return self._proof(row.leaf_index, f"event {event_id} (leaf {row.leaf_index})")

    def leaf_proof(self, index: int) -> ProofDocument:
        """The proof document of leaf ``index`` (for a logged message without an event id).

        Raises :class:`NotFound` beyond the log, :class:`NotCovered` beyond the latest checkpoint.
        """
        # Compared before reading: past the largest index the database stores, index + 1 overflows it.
        size = self.log.size()
        if index >= size:
            raise NotFound(f"leaf {index} is not in the log: it holds {size} leaves (indexes 0 to {size - 1})"
                           if size else f"leaf {index} is not in the log: it holds no leaf yet",
                           hint="leaf indexes are 0-based; an event's is in its listing (leaf_index)")
        return self._proof(index, f"leaf {index}")

    def _proof(self, index: int, what: str) -> ProofDocument:
        cp = self.latest_checkpoint()
        if index >= cp.size:
            raise NotCovered(f"{what} is not yet covered by the latest checkpoint (size {cp.size})")
        leaf = next(self.log.leaves(index, index + 1), None)
        if leaf is None:
            raise StoreError(f"the log holds no leaf {index} for {what}: the store is damaged")
        path = inclusion_proof(self.log.fetch_nodes, index, cp.size)
        doc = proof_document(event_id=leaf.event_id or "", leaf=leaf.data, leaf_index=index, inclusion_path=path,
                             checkpoint_note=cp.note, tree_size=cp.size,
                             log_public_key=self.log_public_key(cp.note))
        # A message without an id proves as event_id null (what its leaf's "id" reads as).
        return ProofDocument.model_validate({**doc, "event_id": leaf.event_id})

    def consistency(self, size1: int, size2: int | None) -> ConsistencyProof:
        """Consistency proof from ``size1`` to ``size2`` (default: the latest checkpoint's size).

        Raises :class:`NotFound` when the log signed no checkpoint yet, :class:`BadRequest` when
        ``size1 > size2`` and :class:`NotCovered` when ``size2`` is beyond the latest checkpoint.
        """
        signed = self.log.checkpoints()  # read once: the list grows with every checkpoint
        if not signed:
            self.latest_checkpoint()  # raises the NotFound that explains it
        latest = signed[-1]
        notes = {c.size: c.note for c in signed}
        to = latest.size if size2 is None else size2
        if size1 > to:
            raise BadRequest(f"no consistency proof from {size1} to {to}: from must not be larger than to "
                             "(a log only grows)")
        if to > latest.size:
            # A size the log may yet reach: the same answer as an event not yet covered.
            raise NotCovered(f"tree size {to} is not yet covered by a checkpoint (the latest is of size "
                             f"{latest.size})")
        proof = consistency_proof(self.log.fetch_nodes, size1, to)
        return ConsistencyProof(
            from_size=size1, to_size=to, proof=[h.hex() for h in proof],
            from_checkpoint=notes[size1].decode() if size1 in notes else None,
            to_checkpoint=notes[to].decode() if to in notes else None,
            log_public_key=self.log_public_key(latest.note),
        )
