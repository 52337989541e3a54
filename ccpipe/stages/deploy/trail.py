"""The deploy stage's own NATS sessions and its incremental view of the trail.

Stage handlers receive only the input event, but the push and schedule steps must read
earlier events of the workload (the ``submitted`` spec) and the node inventory. A
:class:`NatsSessions` opens a connection for one handler call.
:func:`refresh_view` folds the events stored since the last call into a
:class:`~ccpipe.stages.deploy.scheduler.PlacementView`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.js import JetStreamContext

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.event_trust import InputTrust
from ccpipe.pipeline.reader import iter_events
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.deploy.scheduler import PlacementView


@dataclass(frozen=True)
class NatsSessions:
    """Opens a short NATS connection per use (a handler call), closed when the block ends.

    A stage handler has no shutdown hook, so a connection kept between calls would outlive
    the stages and reconnect forever to a server that is gone; a loopback connect costs ~2 ms.
    """

    nats_url: str | None
    settings: Settings
    identity: str
    """The bus identity the sessions connect as (the stage's component)."""

    @asynccontextmanager
    async def session(self) -> AsyncIterator[JetStreamContext]:
        """A JetStream context for the block; raises :class:`TransientError` if NATS cannot be reached."""
        if self.nats_url is None:
            raise ConfigurationError(
                f"the {self.identity} stage has no NATS URL", hint="set CCPIPE_NATS_URL or run it under 'ccpipe up'",
                code="deploy.nats.unconfigured",
            )
        nc = await connect_as(self.settings, self.nats_url, self.identity)
        try:
            yield nc.jetstream()
        finally:
            await nc.close()


async def refresh_view(js: JetStreamContext, view: PlacementView, trust: InputTrust) -> PlacementView:
    """Fold every event stored after ``view.last_seq`` into ``view``.

    Unreadable events, and events ``trust`` refuses (a forged ``pushed`` must not get a placement),
    are skipped.
    """
    start = view.last_seq + 1 if view.last_seq else None
    async for stored in iter_events(js, start_seq=start):
        event = stored.trusted_by(trust) if stored.event is not None else None
        if event is not None:
            view.apply(event, stored.seq)
        else:
            view.last_seq = max(view.last_seq, stored.seq)
    return view
