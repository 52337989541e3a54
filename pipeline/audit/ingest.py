"""Ingest: turn messages read from the stream into logged, signature-checked, indexed leaves.

Pure of NATS: the audit service (:mod:`pipeline.audit.service`) feeds :meth:`Ingestor.ingest`
batches of :class:`StreamMessage` read in stream order, and acks them once it returns. Each
message's ``Ccpipe-Signature`` is checked against the keyring; an event that is unsigned,
signed by an unknown key, badly signed or signed by another component is **flagged** in
the index (``signature`` ≠ ``valid``), never dropped: the log records what was on the bus.
An unknown key id makes the keyring file be read again (a component that started after
the audit service registered its key since), at most once per change of the file.

Imports :mod:`pipeline.audit` modules only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.audit.entry import Entry
from pipeline.audit.event_signing import Keyring, SignatureVerdict, check_event_signature
from pipeline.audit.fields import extract
from pipeline.audit.query import AuditIndex
from pipeline.audit.store.index_sql import IndexRow, signature_state
from pipeline.audit.store.interface import Appended, LogStore


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


class KeyringFile:
    """The trail's keyring, read from its file and re-read when it changed and a key is unknown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.keyring = Keyring()
        self.reload()

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Read the file again if it changed since the last read; True if it was re-read.

        Raises :class:`~pipeline.audit.errors.KeyMaterialError` if it exists but is unreadable.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self.keyring = Keyring.load(self.path) if stamp is not None else Keyring()
        self._stamp = stamp
        return True

    def state(self, data: bytes, header: str | None) -> str:
        """The :attr:`~pipeline.audit.query.IndexedEvent.signature` state of one message."""
        check = check_event_signature(self.keyring, data, header)
        if check.verdict is SignatureVerdict.UNKNOWN_KEY and self.reload():
            check = check_event_signature(self.keyring, data, header)
        return signature_state(check.verdict)


class Ingestor:
    """Logs and indexes batches of stream messages into one :class:`AuditStore`."""

    def __init__(self, store: AuditStore, keys: KeyringFile) -> None:
        self.store = store
        self.keys = keys

    def prepare(self, msgs: Sequence[StreamMessage]) -> tuple[list[Entry], list[IndexRow]]:
        """Leaf entries and index rows of ``msgs`` (no I/O but the keyring file)."""
        entries, rows = [], []
        for m in msgs:
            x = extract(m.data)
            entries.append(Entry(m.data, stream_seq=m.seq, signature=m.signature, event_id=x.event_id or None))
            rows.append(IndexRow(m.seq, x, self.keys.state(m.data, m.signature)))
        return entries, rows

    def ingest(self, msgs: Sequence[StreamMessage]) -> Appended:
        """Log and index ``msgs`` (in stream order) in one transaction; redelivered ones are skipped.

        Raises :class:`~pipeline.audit.errors.StoreError` (nothing written) on a gap, on a
        redelivery with other bytes, or when the database fails.
        """
        entries, rows = self.prepare(msgs)
        return self.store.append_indexed(entries, rows)
