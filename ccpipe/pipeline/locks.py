"""Exclusive locks on files in the data directory that say who holds them.

A :class:`HeldLock` is an ``fcntl.flock`` on a file that also records its holder (pid, since
when, and any processes that share it), so the one refused can name whom to stop. The kernel
drops the lock when the last process holding its descriptor exits: a lock handed to a child
(:attr:`HeldLock.fd` in ``pass_fds``) stays held as long as that child runs, even after the
parent that took it was killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccpipe.schemas.errors import ConfigurationError


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as its file records it."""

    pid: int | None = None
    since: str | None = None
    shared_with: dict[str, int] = field(default_factory=dict)
    """Processes the holder handed the lock to (e.g. ``{"nats-server": 1234}``)."""

    def describe(self) -> str:
        """``pid 12 since 2026-12-04 16:20:01 UTC, nats-server pid 34``, or a plea of ignorance."""
        if self.pid is None:
            return "its holder left no record"
        parts = [f"pid {self.pid}" + (f" since {self.since}" if self.since else "")]
        parts += [f"{name} pid {pid}" for name, pid in self.shared_with.items()]
        return ", ".join(parts)


def pid_alive(pid: int | None) -> bool:
    """True while process ``pid`` exists (whoever owns it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def read_holder(path: Path) -> LockHolder:
    """The holder a lock file records (empty when it records none or cannot be read)."""
    try:
        data: Any = json.loads(path.read_text() or "{}")
        return LockHolder(pid=int(data["pid"]), since=str(data.get("since") or "") or None,
                          shared_with={str(k): int(v) for k, v in dict(data.get("shared_with") or {}).items()})
    except (OSError, ValueError, KeyError, TypeError):
        return LockHolder()


class HeldLock:
    """An exclusive ``flock`` on one file, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self.shared_with: dict[str, int] = {}
        self._record()

    def share_with(self, name: str, pid: int) -> None:
        """Record that process ``pid`` (``name``) holds the lock too (it inherited :attr:`fd`)."""
        self.shared_with[name] = pid
        self._record()

    def _record(self) -> None:
        text = json.dumps({"pid": os.getpid(), "since": self.since, "shared_with": self.shared_with})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode() + b"\n", 0)

    def release(self) -> None:
        """Drop the lock (children that inherited it keep it until they exit)."""
        if self.fd >= 0:
            # close, not LOCK_UN: an unlock through any descriptor would release it for the children too
            os.close(self.fd)
            self.fd = -1


def take_lock(path: Path, refusal: str, *, hint: str, code: str, wait_for_dying_s: float = 0.0) -> HeldLock:
    """Take the exclusive lock on ``path`` (created if missing) or raise :class:`ConfigurationError`.

    The error's message is ``<refusal> (<holder>)``, e.g. ``... (pid 12 since 2026-12-04 16:20:01 UTC)``.
    ``wait_for_dying_s``: when the recorded holder has exited but the lock is still held, a
    process it handed the lock to is still running; wait up to that long for it to go (a child
    stopped by its parent-death signal needs a moment) before refusing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait_for_dying_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return HeldLock(path, fd)
        except BlockingIOError:
            holder = read_holder(path)
            if pid_alive(holder.pid) or time.monotonic() >= deadline:
                os.close(fd)
                raise ConfigurationError(f"{refusal} ({holder.describe()})", hint=hint, code=code) from None
            time.sleep(0.1)
