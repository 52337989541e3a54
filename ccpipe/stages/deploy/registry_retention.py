"""Registry retention: the embedded registry drops the images of ended workloads, as the
retention settings say (``CCPIPE_RETAIN_WORKLOADS``, ``CCPIPE_RETAIN_HOURS``: the same settings
that keep a workload's image layouts; either one keeps an image).

The push stage tags each image with its workload id. Every round (:data:`INTERVAL_S`) the loop
lists those tags in the registry's storage (read only), looks up in the trail whether each
workload has ended (``workload.exited`` or ``failed``, trusted events only) and which image its
``pushed`` event named, and hands the images that are due to
:func:`ccpipe.pipeline.registry_gc.remove_images` (admin deletes, then the garbage collector,
which restarts the registry: hence rounds minutes apart, and none while nothing is due).

Never removed: an image of a workload that has not ended (running, pending, scheduled, or not
pushed yet), nor any image whose digest a workload that has not ended also names; an image the
trail cannot attribute (no trusted ``pushed`` event naming that repository) is left alone.
The registry's base images (``ccpipe/base/...``) carry no workload tag and are never candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.js import JetStreamContext

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.event_trust import InputTrust, input_trust
from ccpipe.pipeline.periodic import every, in_background
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.registry_gc import ImageRef, remove_images
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.events import EventType, Pushed
from ccpipe.stages.sign.retention import due_for_removal

log = logging.getLogger("ccpipe.deploy.registry_retention")

INTERVAL_S = 60.0
"""Seconds between rounds: each removal restarts the registry for about a second."""
_WORKLOAD_TAG = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
"""A workload id (as the envelope allows); digest tags (``sha256-…``) never match."""
_REPOSITORIES = Path("docker/registry/v2/repositories")


def workload_tags(storage: Path) -> dict[str, set[str]]:
    """Tags that may name a workload → the repositories holding them, from the registry's storage."""
    root = storage / _REPOSITORIES
    found: dict[str, set[str]] = {}
    for folder, dirs, _ in os.walk(root):
        if "_manifests" not in dirs:
            continue
        repository = os.path.relpath(folder, root)
        with contextlib.suppress(OSError):
            for tag in os.listdir(os.path.join(folder, "_manifests", "tags")):
                if _WORKLOAD_TAG.fullmatch(tag) and not tag.startswith("sha256-"):
                    found.setdefault(tag, set()).add(repository)
        dirs[:] = [d for d in dirs if not d.startswith("_")]
    return found


def images_due(
    ended: dict[str, tuple[datetime, ImageRef]], live_digests: set[str], *, now: datetime, keep_last: int,
    keep_for: timedelta,
) -> dict[str, ImageRef]:
    """Ended workloads whose image goes now → the image; never one a live workload names."""
    due = due_for_removal({wl: at for wl, (at, _) in ended.items()}, now=now, keep_last=keep_last,
                          keep_for=keep_for)
    return {wl: ended[wl][1] for wl in due if ended[wl][1].digest not in live_digests}


async def _trusted(js: JetStreamContext, workload_id: str, etype: EventType, trust: InputTrust) -> Event | None:
    with contextlib.suppress(InvalidInput):  # none, unreadable, or not signed by who may emit it
        return await workload_event(js, workload_id, etype, trust=trust)
    return None


@dataclass
class RegistryRetention:
    """One embedded registry's retention, with what it learned of ended workloads."""

    js: JetStreamContext
    settings: Settings
    registry: EmbeddedRegistry
    ended: dict[str, tuple[datetime, ImageRef]] = field(default_factory=dict)
    """Ended workloads with an image still tagged (an end is final: looked up once)."""
    unattributed: set[str] = field(default_factory=set)
    """Ended workloads whose tag no trusted ``pushed`` event explains: left alone, not looked up again."""
    trust: InputTrust = field(init=False)

    def __post_init__(self) -> None:
        self.trust = input_trust(self.settings.data_dir)

    async def _pushed(self, workload_id: str) -> Pushed | None:
        event = await _trusted(self.js, workload_id, EventType.PUSHED, self.trust)
        return event.payload if event is not None and isinstance(event.payload, Pushed) else None

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One round; returns the workloads whose images were removed."""
        tags = await asyncio.to_thread(workload_tags, self.registry.storage)
        self.ended = {wl: v for wl, v in self.ended.items() if wl in tags}
        self.unattributed &= set(tags)
        live_digests: set[str] = set()
        for wl, repositories in tags.items():
            if wl in self.ended or wl in self.unattributed:
                continue
            end = None
            for etype in (EventType.WORKLOAD_EXITED, EventType.FAILED):
                if (end := await _trusted(self.js, wl, etype, self.trust)) is not None:
                    break
            pushed = await self._pushed(wl)
            if end is None:  # running, waiting or not pushed yet: its image, and any it shares, stay
                if pushed is not None:
                    live_digests.add(pushed.image_digest)
                continue
            if pushed is None or pushed.repository not in repositories:
                self.unattributed.add(wl)
                continue
            self.ended[wl] = (end.occurred_at, ImageRef(pushed.repository, pushed.image_digest))
        due = images_due(self.ended, live_digests, now=now or datetime.now(UTC),
                         keep_last=self.settings.retain_workloads,
                         keep_for=timedelta(hours=self.settings.retain_hours))
        if not due:
            return []
        try:
            result = await asyncio.to_thread(remove_images, self.registry, list(dict.fromkeys(due.values())),
                                             restart=False)
        finally:
            # started from this (the main) thread, so it gets the parent-death signal like every child
            if self.registry.pid is None:
                self.registry.start()
        for image, why in result.failed.items():
            log.warning("registry retention: %s@%s is left for the next round: %s", image.repository, image.digest,
                        why)
        removed = [wl for wl, image in due.items() if image not in result.failed]
        log.info("registry retention: removed the images of %d ended workloads (%d manifests), %.1f MB freed",
                 len(removed), len(result.deleted), result.freed_bytes / 2**20)
        for wl in removed:
            del self.ended[wl]
        return sorted(removed)

    async def run(self, interval: float) -> None:
        """Tick every ``interval`` seconds until cancelled; errors are logged, never fatal."""
        await every(interval, self.tick, log, "registry retention round")


@asynccontextmanager
async def serve_registry_retention(
    settings: Settings, endpoints: Endpoints, registry: EmbeddedRegistry, *, interval: float = INTERVAL_S
) -> AsyncIterator[Endpoints]:
    """Run the retention of the embedded ``registry`` while the block is open; yields ``endpoints``.

    Raises :class:`TransientError` if NATS cannot be reached and :class:`ConfigurationError`
    for a bad interval.
    """
    if interval <= 0:
        raise ConfigurationError(f"registry retention interval {interval} must be positive",
                                 code="deploy.registry_retention.interval")
    # the push stage's identity: the one that pushed the images; it only looks events up by direct get
    nc = await connect_as(settings, endpoints.nats_url, Component.PUSH, name="ccpipe-registry-retention")
    try:
        loop = RegistryRetention(nc.jetstream(), settings, registry)
        async with in_background(loop.run(interval), "ccpipe-registry-retention"):
            yield endpoints
    finally:
        await nc.close()


__all__ = ["INTERVAL_S", "RegistryRetention", "images_due", "serve_registry_retention", "workload_tags"]
