"""What the audit service says about itself, and the checks that keep it from logging blind.

:class:`AuditStatus` is the service's state (leading, standby, degraded, refused), why, and
its ingest lag (stream last sequence − logged sequence). The service writes it to
:func:`status_path` in the data directory at every change and every second; the audit API's
``/readyz`` reads it (it may run in another process), so a stale file means not ready too.

Two checks, pure of NATS and of the database:

* :func:`tail_problem`: the store's tail against the stream's messages at the same
  sequences. A leaf whose bytes or hash differ is a forged store; the service refuses to
  sign a checkpoint over it.
* :func:`stream_problem`: the stream as it is now against what the log followed (created
  time, first and last sequence): missing, re-created, purged or shrunk.

Imports :mod:`ccpipe.pipeline.audit` modules only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path

from ccpipe.pipeline.audit.errors import AuditError
from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.pipeline.audit.store.interface import StoredLeaf

STATUS_FILE = "status.json"
STALE_AFTER_S = 5.0
"""A status older than this is not believed: the service that wrote it stopped or hangs."""


class AuditState(StrEnum):
    """Where the audit service stands."""

    STARTING = "starting"
    LEADING = "leading"
    """Holds the writer lease and logs every event: ready."""
    STANDBY = "standby"
    """Another process holds the lease; this one waits to take over."""
    DEGRADED = "degraded"
    """Should be logging but cannot (NATS away, stream missing or re-created, store failing); retrying."""
    REFUSED = "refused"
    """The store does not match the stream: nothing is written or signed until a person looks."""


class StoreMismatch(AuditError):
    """The audit store's tail differs from the stream: the store (or the stream) was altered."""

    code = "audit.store.mismatch"
    default_hint = ("do not trust this store: compare it with `ccpipe audit verify`, then restore it from a "
                    "backup or move it aside to rebuild the log from the stream")


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """The audit service's state as ``/readyz`` and the status file show it."""

    state: AuditState
    reason: str = ""
    holder: str = ""
    """The process that wrote it (host:pid)."""
    logged_seq: int = 0
    """Stream sequence of the last logged event."""
    stream_last_seq: int | None = None
    """The stream's last sequence when last asked (None: not known)."""
    updated: float = 0.0
    """Unix time it was written."""

    @property
    def lag(self) -> int | None:
        """Events on the stream not logged yet (None while the stream cannot be asked)."""
        return None if self.stream_last_seq is None else max(0, self.stream_last_seq - self.logged_seq)

    @property
    def ready(self) -> bool:
        """Ready: this process logs every event (a standby is healthy but serves no writes)."""
        return self.state is AuditState.LEADING

    def to_json(self) -> dict[str, object]:
        """The JSON shape of the status file and of ``/readyz``."""
        return {**asdict(self), "state": self.state.value, "lag": self.lag}

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> AuditStatus:
        """Parse :meth:`to_json`'s output; raises ``ValueError``/``TypeError``/``KeyError`` if malformed."""
        last = doc.get("stream_last_seq")
        return cls(AuditState(str(doc["state"])), str(doc.get("reason", "")), str(doc.get("holder", "")),
                   int(str(doc.get("logged_seq", 0))), None if last is None else int(str(last)),
                   float(str(doc.get("updated", 0.0))))


def status_path(data_dir: Path) -> Path:
    """Where the audit service of ``data_dir`` writes its status."""
    return data_dir / "audit" / STATUS_FILE


def write_status(path: Path, status: AuditStatus) -> None:
    """Write ``status`` (stamped now) atomically: a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(replace(status, updated=time.time()).to_json()))
    os.replace(tmp, path)


def read_status(path: Path, *, stale_after_s: float = STALE_AFTER_S) -> AuditStatus:
    """The audit service's status; a missing, unreadable or stale file is a not-ready status saying so."""
    try:
        status = AuditStatus.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return AuditStatus(AuditState.DEGRADED, f"no audit service has written {path}: is one running?")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return AuditStatus(AuditState.DEGRADED, f"the audit status file {path} is unreadable: {exc}")
    age = time.time() - status.updated
    if age > stale_after_s and status.ready:
        return replace(status, state=AuditState.DEGRADED,
                       reason=f"the audit service last reported {age:.0f} s ago: it stopped or hangs")
    return status


@dataclass(frozen=True, slots=True)
class StreamMark:
    """What identifies the stream the log follows."""

    created: str | None
    """Its creation time (ISO 8601) as the server reports it: a re-created stream has another."""
    first_seq: int
    last_seq: int


def stream_problem(stream: str, logged_seq: int, followed: StreamMark | None, now: StreamMark | None) -> str | None:
    """Why the log cannot go on following ``stream`` (None: it can).

    ``logged_seq``: the store's last sequence; ``followed``: the stream as the log last saw it
    (None if unknown); ``now``: the stream as it is (None: it does not exist).
    """
    if now is None:
        return f"stream {stream} is missing; the log holds events up to sequence {logged_seq}"
    if followed is not None and followed.created and now.created and followed.created != now.created:
        return (f"stream {stream} was re-created at {now.created} (the log followed the one created at "
                f"{followed.created}, up to sequence {logged_seq})")
    if now.last_seq < logged_seq:
        return (f"stream {stream} ends at sequence {now.last_seq} but the log holds events up to {logged_seq}: "
                "it was re-created, purged or shrunk")
    if now.first_seq > logged_seq + 1:
        return (f"stream {stream} starts at sequence {now.first_seq}: events {logged_seq + 1}–{now.first_seq - 1} "
                "were removed before they were logged")
    return None


def tail_problem(leaves: Sequence[StoredLeaf], stream: Mapping[int, bytes]) -> str | None:
    """The first stored leaf that the stream contradicts, named (None: the tail matches).

    ``stream`` maps stream sequence → message bytes; a leaf whose message the stream no
    longer holds is left to :func:`stream_problem`.
    """
    for leaf in leaves:
        where = f"leaf {leaf.index} (stream sequence {leaf.stream_seq})"
        if leaf_hash(leaf.data) != leaf.leaf_hash:
            return f"{where}: its stored bytes do not hash to its stored leaf hash"
        message = stream.get(leaf.stream_seq)
        if message is not None and leaf_hash(message) != leaf.leaf_hash:
            return f"{where} differs from the stream's message at that sequence"
    return None
