"""The deploy stage's own NATS connection and its incremental view of the trail.

Stage handlers receive only the input event, but the push and schedule steps must read
earlier events of the workload (the ``submitted`` spec) and the node inventory. A
:class:`LazyJetStream` opens one connection on first use, inside the running event loop (a
stage factory is called before there is one), and reopens it if it was closed.
:func:`refresh_view` folds the events stored since the last call into a
:class:`~stages.deploy.scheduler.PlacementView`.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from pipeline.bus import connect
from pipeline.reader import iter_events
from schemas.errors import ConfigurationError
from stages.deploy.scheduler import PlacementView


class LazyJetStream:
    """One NATS connection for a component, opened when first needed."""

    def __init__(self, nats_url: str | None, *, name: str, creds: str | None = None) -> None:
        self.nats_url = nats_url
        self.name = name
        self.creds = creds
        self._nc: NatsClient | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> JetStreamContext:
        """The JetStream context; raises :class:`TransientError` if NATS cannot be reached."""
        if self.nats_url is None:
            raise ConfigurationError(
                f"{self.name} has no NATS URL", hint="set CCPIPE_NATS_URL or run it under 'ccpipe up'",
                code="deploy.nats.unconfigured",
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.nats_url, name=self.name, creds=self.creds)
            return self._nc.jetstream()

    async def close(self) -> None:
        """Close the connection if it is open."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = None


async def refresh_view(js: JetStreamContext, view: PlacementView) -> PlacementView:
    """Fold every event stored after ``view.last_seq`` into ``view`` (unreadable events are skipped)."""
    start = view.last_seq + 1 if view.last_seq else None
    async for stored in iter_events(js, start_seq=start):
        if stored.event is not None:
            view.apply(stored.event, stored.seq)
        else:
            view.last_seq = max(view.last_seq, stored.seq)
    return view
