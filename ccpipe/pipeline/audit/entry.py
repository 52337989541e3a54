"""One log entry: the canonical event bytes that are a Merkle leaf, and their leaf hash.

The leaf is exactly the bytes published on NATS (RFC 8785 canonical JSON of the event);
the ``Ccpipe-Signature`` header travels beside it and is stored with it, never inside it.
The leaf hash is computed once, when the entry is built, so an :class:`Entry` cannot carry
a hash that disagrees with its bytes.

Imports nothing of the project except :mod:`ccpipe.pipeline.audit.merkle` and ``schemas``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.schemas.envelope import Event


def event_id_of(data: bytes) -> str | None:
    """The ``id`` of the event encoded in ``data``, or None if the bytes are not an event.

    Malformed messages are logged too (the log records what was on the bus), so this never
    raises.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Entry:
    """A leaf of the audit log, before or after it is given an index.

    ``data`` is the leaf; ``signature`` the ``Ccpipe-Signature`` header value as received
    (None when the message had none); ``stream_seq`` the JetStream stream sequence it was
    read at, which orders the log and lets a consumer resume.
    """

    data: bytes
    """The canonical event bytes: the Merkle leaf."""
    stream_seq: int | None = None
    """JetStream stream sequence of the message (1-based), None outside a stream."""
    signature: str | None = None
    """The ``Ccpipe-Signature`` header value (``<key_id>:<base64 sig>``), if any."""
    event_id: str | None = None
    """The event's ``id``; read from ``data`` when not given."""
    leaf_hash: bytes = field(init=False, repr=False)
    """SHA-256(0x00 ‖ data), computed at construction."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "leaf_hash", leaf_hash(self.data))
        if self.event_id is None:
            object.__setattr__(self, "event_id", event_id_of(self.data))

    @classmethod
    def from_event(cls, event: Event, *, stream_seq: int | None = None, signature: str | None = None) -> Entry:
        """The entry for a parsed event: its canonical bytes, its id."""
        return cls(event.canonical_bytes(), stream_seq=stream_seq, signature=signature, event_id=event.id)
