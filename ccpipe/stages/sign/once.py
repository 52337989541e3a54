"""At most one signing per workload, across every replica of the sign stage.

A workload is signed for exactly one input: the first ``attestation.verified`` that claims it.
The claim is a create-only marker keyed by the workload id (:class:`MarkerStore`; in NATS KV,
:mod:`ccpipe.stages.sign.markers_kv`), so two replicas, two hosts or a replay can never both
sign. :func:`decide` reads a marker and says what a delivery of an input may do:

* no marker, or this very input's marker that went stale (the replica that held it died): sign;
* this input's marker with a finished ``signed`` payload: return it (a redelivery after the
  output was stored; the runtime's de-duplication keeps it one event);
* this input's marker still fresh: another delivery is signing; wait for it;
* a marker of **another** input: refuse (:class:`AlreadySigned`, a ``failed`` event): a second
  ``built`` or attestation for a workload that was signed (or is being signed) never replaces
  the key in the KBS behind the published ``signed``.

Pure apart from the store it is handed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from ccpipe.schemas.errors import TransientError
from ccpipe.schemas.events import Signed
from ccpipe.stages.sign.errors import SignStageError


class AlreadySigned(SignStageError):
    """The workload was signed (or is being signed) for another input: this one is refused."""

    code = "sign.already_signed"
    default_hint = "a workload is signed once; resubmit the source to build and sign it as a new workload"


class Marker(BaseModel):
    """What the marker of one workload holds."""

    input_event_id: str
    """The ``attestation.verified`` event the workload is signed for."""
    claimed_at: float
    """When the delivery holding it claimed (or last renewed) it, in seconds since the epoch."""
    signed: Signed | None = None
    """The ``signed`` payload, once everything is registered."""


class MarkerStore(Protocol):
    """Create-only, compare-and-set storage of markers (one key per workload)."""

    async def create(self, key: str, value: bytes) -> int | None:
        """Store ``value`` if ``key`` has none; its revision, or ``None`` when one exists."""
        ...

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and revision of ``key``, if any."""
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Replace ``key``'s value if its revision is still ``revision``; the new revision, or ``None``."""
        ...


@dataclass(frozen=True)
class SignOnce:
    """Runs one signing per workload through a :class:`MarkerStore`."""

    store: MarkerStore
    stale_after_s: float = 60.0
    """A claim older than this (and not finished) is taken as left by a dead delivery."""
    poll_s: float = 0.2

    async def run(self, workload_id: str, input_event_id: str, sign: Callable[[], Awaitable[Signed]]) -> Signed:
        """``sign()`` at most once for ``workload_id``; returns the ``signed`` payload it gave.

        Raises :class:`AlreadySigned` for an input other than the one the workload is signed
        for, :class:`TransientError` while the store cannot be reached, and what ``sign`` raises.
        """
        revision = await self._claim(workload_id, input_event_id)
        while revision is None:  # a delivery of the same input holds it: wait for its result
            await asyncio.sleep(self.poll_s)
            existing = await self._read(workload_id)
            if existing is not None and existing[0].signed is not None:
                return existing[0].signed
            revision = await self._claim(workload_id, input_event_id)
        if isinstance(revision, Signed):
            return revision
        signed = await sign()
        done = Marker(input_event_id=input_event_id, claimed_at=time.time(), signed=signed)
        if await self.store.update(workload_id, done.model_dump_json().encode(), revision) is None:
            raise TransientError(f"the sign marker of {workload_id} changed while signing", code="sign.marker")
        return signed

    async def _read(self, workload_id: str) -> tuple[Marker, int] | None:
        got = await self.store.get(workload_id)
        return None if got is None else (Marker.model_validate_json(got[0]), got[1])

    async def _claim(self, workload_id: str, input_event_id: str) -> int | Signed | None:
        """The revision of this delivery's claim, the finished result, or ``None`` (wait)."""
        fresh = Marker(input_event_id=input_event_id, claimed_at=time.time()).model_dump_json().encode()
        revision = await self.store.create(workload_id, fresh)
        if revision is not None:
            return revision
        existing = await self._read(workload_id)
        if existing is None:  # removed in between: claim again on the next round
            return None
        marker, current = existing
        if marker.input_event_id != input_event_id:
            raise AlreadySigned(
                f"workload {workload_id} is signed for attestation {marker.input_event_id}; "
                f"attestation {input_event_id} is refused"
            )
        if marker.signed is not None:
            return marker.signed
        if time.time() - marker.claimed_at < self.stale_after_s:
            return None
        return await self.store.update(workload_id, fresh, current)  # take over a dead delivery's claim
