"""A bounded trail of refused requests: one ``kbs.refused`` event per client, kind and interval.

A refused admin call, or an ``/auth`` past a client's rate, is counted here instead of being an
event of its own: a client that sends a thousand of them in a minute costs the audit trail one
event (with the count and the refusal codes), not a thousand. An interval starts with a
client's first refusal and its event is stored when it ends (:meth:`RefusalTrail.flush`, which
the KBS calls periodically and on shutdown). At most :data:`MAX_CLIENTS` clients are told
apart per kind; refusals from further ones are counted under :data:`OTHER_CLIENTS`.

The ``/auth`` rate (:meth:`RefusalTrail.admit_auth`) is a fixed window per client: at most
``auth_per_interval`` handshakes are opened (each one an ``attestation.challenged`` event),
the rest are refused until the window ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_CLIENTS = 1024
"""Clients counted apart per kind and interval (the table's bound)."""
OTHER_CLIENTS = "(other clients)"
MAX_REASONS = 16
"""Refusal codes counted apart in one summary; more are counted under ``other``."""

Summarise = Callable[[str, str, "Tally", float], Awaitable[Any]]
"""Stores the summary of one (client, kind) interval: ``(client, kind, tally, interval_s)``."""


@dataclass
class Tally:
    """The refusals of one client and kind in one interval."""

    started: float
    first_at: datetime
    last_at: datetime
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, at: datetime) -> None:
        """Count one refusal with code ``reason``."""
        self.count += 1
        self.last_at = at
        key = reason if reason in self.reasons or len(self.reasons) < MAX_REASONS else "other"
        self.reasons[key] = self.reasons.get(key, 0) + 1


class RefusalTrail:
    """Counts refusals per client and interval and stores one summary for each (see the module docstring)."""

    def __init__(self, summarise: Summarise, *, interval_s: float = 60.0, auth_per_interval: int = 600,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Store summaries with ``summarise``; ``auth_per_interval`` 0 lets every ``/auth`` through."""
        self._summarise = summarise
        self.interval_s = interval_s
        self.auth_per_interval = auth_per_interval
        self._clock = clock
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._auth_windows: dict[str, tuple[float, int]] = {}

    def note(self, client: str, kind: str, reason: str) -> None:
        """Count one refused request of ``kind`` (``admin``, ``auth``) from ``client``."""
        now, at = self._clock(), datetime.now(UTC)
        key = (client, kind)
        if key not in self._tallies and sum(1 for c, k in self._tallies if k == kind) >= MAX_CLIENTS:
            key = (OTHER_CLIENTS, kind)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = Tally(started=now, first_at=at, last_at=at)
        tally.add(reason, at)

    def admit_auth(self, client: str) -> bool:
        """True if ``client`` may open one more handshake in its current window (and count it)."""
        if self.auth_per_interval <= 0:
            return True
        now = self._clock()
        started, used = self._auth_windows.get(client, (now, 0))
        if now - started >= self.interval_s:
            started, used = now, 0
        if used >= self.auth_per_interval:
            return False
        if client not in self._auth_windows and len(self._auth_windows) >= MAX_CLIENTS:
            self._drop_ended_auth_windows(now)
        self._auth_windows[client] = (started, used + 1)
        return True

    def _drop_ended_auth_windows(self, now: float) -> None:
        for client, (started, _) in list(self._auth_windows.items()):
            if now - started >= self.interval_s:
                del self._auth_windows[client]

    async def flush(self, *, all_intervals: bool = False) -> int:
        """Store the summary of every interval that has ended (every one with ``all_intervals``).

        Returns how many were stored. A summary that cannot be stored is kept for the next flush
        and the error raised.
        """
        now = self._clock()
        stored = 0
        for key, tally in list(self._tallies.items()):
            if all_intervals or now - tally.started >= self.interval_s:
                await self._summarise(key[0], key[1], tally, self.interval_s)
                del self._tallies[key]
                stored += 1
        return stored
