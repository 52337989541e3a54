"""The retention service: removes an ended workload's image layouts, as the retention settings say.

Every ``interval`` seconds it lists the workloads that still have a layout under
``<data_dir>/images``, looks up (directly, no consumer) whether each has ended
(``workload.exited`` or ``failed``) and removes the layouts
:func:`~ccpipe.stages.sign.retention.due_for_removal` names. Working from the directory, not
from a consumer, it also removes what workloads that ended while ``ccpipe up`` was stopped
left behind, and reads nothing of the trail for workloads already cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.event_trust import InputTrust, input_trust
from ccpipe.pipeline.periodic import every, in_background
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.events import EventType
from ccpipe.stages.sign.retention import due_for_removal, remove_layouts, workloads_with_layouts

log = logging.getLogger("ccpipe.sign.retention")

END_TYPES = (EventType.WORKLOAD_EXITED, EventType.FAILED)
"""The events after which nothing more happens to a workload."""


async def ended_at(js: JetStreamContext, workload_id: str, trust: InputTrust) -> datetime | None:
    """When the workload ended (its ``workload.exited`` or ``failed`` event), or None while it has not."""
    for etype in END_TYPES:
        # no such event, one that does not parse, or one no component allowed to emit it signed
        with contextlib.suppress(InvalidInput):
            return (await workload_event(js, workload_id, etype, trust=trust)).occurred_at
    return None


@dataclass
class RetentionLoop:
    """One data directory's retention, with what it learned of ended workloads."""

    js: JetStreamContext
    settings: Settings
    ended: dict[str, datetime] = field(default_factory=dict)
    """Ended workloads that still have layouts (an end is final: looked up once)."""
    trust: InputTrust = field(init=False)
    """Only a trusted end counts: a forged ``failed`` must not remove a running workload's layouts."""

    def __post_init__(self) -> None:
        self.trust = input_trust(self.settings.data_dir)

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One round: find which workloads with layouts have ended, remove what is due; returns those cleaned."""
        present = workloads_with_layouts(self.settings.data_dir)
        self.ended = {wl: at for wl, at in self.ended.items() if wl in present}
        for wl in present:
            if wl not in self.ended and (at := await ended_at(self.js, wl, self.trust)) is not None:
                self.ended[wl] = at
        due = due_for_removal(
            self.ended, now=now or datetime.now(UTC), keep_last=self.settings.retain_workloads,
            keep_for=timedelta(hours=self.settings.retain_hours),
        )
        cleaned = []
        for wl in due:
            try:
                await asyncio.to_thread(remove_layouts, self.settings.data_dir, wl)
            except OSError as exc:  # tried again next round
                log.warning("could not remove the image layouts of %s: %s", wl, exc)
                continue
            del self.ended[wl]
            cleaned.append(wl)
        return cleaned

    async def run(self, interval: float) -> None:
        """Tick every ``interval`` seconds until cancelled; errors are logged, never fatal."""

        async def round_() -> None:
            for wl in await self.tick():
                log.info("%s ended: image layouts removed", wl)

        await every(interval, round_, log, "retention round")


@asynccontextmanager
async def serve_retention(
    settings: Settings, endpoints: Endpoints, *, interval: float = 1.0
) -> AsyncIterator[Endpoints]:
    """Run the retention service while the block is open (a ``ServiceFactory``); yields ``endpoints``.

    Raises :class:`TransientError` if NATS cannot be reached and :class:`ConfigurationError`
    for a bad interval.
    """
    if interval <= 0:
        raise ConfigurationError(f"retention interval {interval} must be positive", code="sign.retention.interval")
    # the sign stage's identity: it only looks events up by direct get, as the sign stage does
    nc = await connect_as(settings, endpoints.nats_url, Component.SIGN, name="ccpipe-retention")
    try:
        async with in_background(RetentionLoop(nc.jetstream(), settings).run(interval), "ccpipe-retention"):
            yield endpoints
    finally:
        await nc.close()
