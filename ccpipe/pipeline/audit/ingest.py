"""Ingest: turn messages read from the stream into logged, signature-checked, indexed leaves.

Pure of NATS: the audit service (:mod:`ccpipe.pipeline.audit.service`) feeds :meth:`Ingestor.ingest`
batches of :class:`StreamMessage` read in stream order, and acks them once it returns. Each
message's ``Ccpipe-Signature`` is checked against the keyring; an event that is unsigned,
signed by an unknown key, badly signed, signed by another component or by one that may not emit
its type is **flagged** in
the index (``signature`` ≠ ``valid``), never dropped: the log records what was on the bus.
An unknown key id makes the keyring file be read again (a component that started after
the audit service registered its key since), at most once per change of the file.

Imports :mod:`ccpipe.pipeline.audit` modules and the trust rule (:mod:`ccpipe.pipeline.event_trust`) only.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.fields import INVALID_TYPE, Extracted, extract
from ccpipe.pipeline.audit.query import AuditIndex
from ccpipe.pipeline.audit.store.index_sql import IndexRow, signature_state
from ccpipe.pipeline.audit.store.interface import Appended, LogStore
from ccpipe.pipeline.children import die_with_parent
from ccpipe.pipeline.event_trust import KeyringFile as TrustedKeyringFile
from ccpipe.pipeline.event_trust import KeyringSource


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of ``CCPIPE_EVENTS`` as the audit service read it."""

    seq: int
    """Stream sequence (1-based)."""
    data: bytes
    """The message body: the canonical event bytes, the Merkle leaf."""
    signature: str | None = None
    """Its ``Ccpipe-Signature`` header, if any."""


class AuditStore(LogStore, AuditIndex, Protocol):
    """A log store that also indexes: what the audit service writes to."""

    def append_indexed(self, entries: Sequence[Entry], rows: Sequence[IndexRow]) -> Appended:
        """Log and index a batch in one transaction."""
        ...


class KeyringStates(KeyringSource[Keyring]):
    """Signature states of messages against one keyring, as it is."""

    def state(self, data: bytes, header: str | None, x: Extracted | None = None) -> str:
        """The :attr:`~ccpipe.pipeline.audit.query.IndexedEvent.signature` state of one message
        (``x``: its extracted fields, to spare parsing it again).

        The subject it was stored under is not judged: the log keeps only the bytes, and
        ``audit verify`` must be able to derive every state again from them.
        """
        source = ((x.component or None, x.source_key_id, x.type, x.workload_id or None)
                  if x is not None and x.type != INVALID_TYPE else None)
        return signature_state(self.check(data, header, source).verdict)


class KeyringFile(TrustedKeyringFile[Keyring], KeyringStates):
    """The trail's keyring (with the log keys), read from its file and re-read when it changed and a key is unknown."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, Keyring)
        self.reload()  # at once: a service with an unreadable keyring must not start


def prepare_rows(keys: KeyringStates, msgs: Sequence[StreamMessage]) -> list[IndexRow]:
    """The index rows of ``msgs``: extracted fields and signature state (CPU only, no database).

    The one row preparation: the audit service indexes with it, ``audit verify`` rebuilds the
    index with it to compare."""
    return _prepare(keys, [(m.seq, m.data, m.signature) for m in msgs])


Raw = tuple[int, bytes, str | None]
"""What a worker process is sent per message: (stream seq, bytes, signature header). Plain
tuples: pickling them costs far less than pickling :class:`StreamMessage` objects."""


def _prepare(keys: KeyringStates, raws: Sequence[Raw]) -> list[IndexRow]:
    rows = []
    for seq, data, header in raws:
        x = extract(data)
        rows.append(IndexRow.of(seq, x, keys.state(data, header, x)))
    return rows


_worker_keys: dict[str, KeyringFile] = {}


def _prepare_in_worker(keyring_path: str, raws: Sequence[Raw]) -> list[IndexRow]:
    # Each worker process keeps its own KeyringFile, re-read when the file changes.
    keys = _worker_keys.get(keyring_path)
    if keys is None:
        keys = _worker_keys[keyring_path] = KeyringFile(Path(keyring_path))
    return _prepare(keys, raws)


class Ingestor:
    """Logs and indexes batches of stream messages into one :class:`AuditStore`.

    With ``workers`` > 0, the CPU-bound part (Ed25519 checks, field extraction) runs in that
    many processes (Ed25519 verification holds the GIL), each on a slice of the batch, while
    the caller may append the previous batch: see :meth:`submit` and :meth:`append`.
    """

    def __init__(self, store: AuditStore, keys: KeyringFile, *, workers: int = 0) -> None:
        self.store = store
        self.keys = keys
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawn, not fork: the service's process has threads (NATS, the database thread).
            # They die with this process: a killed log service must not leave them blocked forever.
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def prepare(self, msgs: Sequence[StreamMessage]) -> tuple[list[Entry], list[IndexRow]]:
        """Leaf entries and index rows of ``msgs``, in this process (no I/O but the keyring file)."""
        rows = prepare_rows(self.keys, msgs)
        return self.entries(msgs, rows), rows

    @staticmethod
    def entries(msgs: Sequence[StreamMessage], rows: Sequence[IndexRow]) -> list[Entry]:
        """The leaf entries of ``msgs`` (their hashes are computed here)."""
        return [Entry(m.data, stream_seq=m.seq, signature=m.signature, event_id=r.event_id or None)
                for m, r in zip(msgs, rows, strict=True)]

    def submit(self, msgs: Sequence[StreamMessage]) -> Future[list[IndexRow]]:
        """Start preparing ``msgs`` (in the worker processes if any); the future gives the rows."""
        if self._pool is None:
            done: Future[list[IndexRow]] = Future()
            done.set_result(prepare_rows(self.keys, msgs))
            return done
        size = max(1, -(-len(msgs) // self.workers))
        raws = [(m.seq, m.data, m.signature) for m in msgs]
        parts = [self._pool.submit(_prepare_in_worker, str(self.keys.path), raws[i:i + size])
                 for i in range(0, len(raws), size)]
        joined: Future[list[IndexRow]] = Future()
        lock = threading.Lock()

        def gather(_: object) -> None:
            with lock:  # the last part to finish completes the whole
                if not all(p.done() for p in parts) or joined.done():
                    return
                try:
                    joined.set_result([r for p in parts for r in p.result()])
                except BaseException as exc:
                    joined.set_exception(exc)

        for p in parts:
            p.add_done_callback(gather)
        return joined

    def append(self, msgs: Sequence[StreamMessage], rows: Sequence[IndexRow]) -> Appended:
        """Log and index prepared ``msgs`` in one transaction (see :meth:`ingest`)."""
        return self.store.append_indexed(self.entries(msgs, rows), rows)

    def ingest(self, msgs: Sequence[StreamMessage]) -> Appended:
        """Log and index ``msgs`` (in stream order) in one transaction; redelivered ones are skipped.

        Raises :class:`~ccpipe.pipeline.audit.errors.StoreError` (nothing written) on a gap, on a
        redelivery with other bytes, or when the database fails.
        """
        return self.append(msgs, self.submit(msgs).result())
