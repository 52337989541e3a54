"""Read events back from ``CCPIPE_EVENTS``: a workload's journey, the whole trail, or a live tail."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ccpipe.pipeline.bus import EVENTS_STREAM
from ccpipe.pipeline.event_trust import InputTrust
from ccpipe.schemas.envelope import SUBJECT_PREFIX, Event, check_workload_id, subject_for
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType

log = logging.getLogger("ccpipe.reader")


@dataclass(frozen=True)
class StoredEvent:
    """An event with its stream sequence and raw bytes (what the audit log hashes)."""

    seq: int
    event: Event | None
    data: bytes
    headers: dict[str, str]
    error: str | None = None
    subject: str = ""
    """The subject it was stored under."""

    def trusted_by(self, trust: InputTrust) -> Event | None:
        """The event if ``trust`` accepts it; ``None`` (logged) for one a consumer must not act on."""
        try:
            return trust.accept(self.data, self.headers, self.subject)
        except InvalidInput as exc:
            log.warning("ignored event at seq %d: %s", self.seq, exc.one_line())
            return None


def filter_for(workload_id: str | None) -> str:
    """Subject filter for one workload's events, or all of them.

    Raises :class:`~ccpipe.schemas.errors.InvalidInput` for an id that is not one subject token
    (``../x`` or ``a.b`` would ask the server for a filter it refuses, or for other workloads).
    """
    return f"{SUBJECT_PREFIX}.{check_workload_id(workload_id)}.>" if workload_id else f"{SUBJECT_PREFIX}.>"


async def ephemeral_pull(
    js: JetStreamContext, stream: str, config: ConsumerConfig
) -> JetStreamContext.PullSubscription:
    """A pull subscription on a new ephemeral consumer of ``stream`` (give it an ``inactive_threshold``).

    The consumer is created without a name, so the server names it: a reader's credentials need
    no right to create *named* consumers, which could rewrite a stage's durable (see
    :mod:`ccpipe.pipeline.nats_auth`). nats-py's ``pull_subscribe`` would name it client-side.
    """
    created = await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(stream=stream, name=created.name)


async def iter_events(
    js: JetStreamContext, workload_id: str | None = None, *, follow: bool = False, start_seq: int | None = None,
    batch: int = 256,
) -> AsyncIterator[StoredEvent]:
    """Yield stored events in stream order; with ``follow`` keep waiting for new ones.

    An event that does not parse is yielded with ``event=None`` and ``error`` set, never dropped.
    """
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
        opt_start_seq=start_seq,
        inactive_threshold=30.0,
        filter_subject=filter_for(workload_id),
    )
    sub = await ephemeral_pull(js, EVENTS_STREAM, config)
    try:
        while True:
            # only a bounded read asks how much is left: a follower needs no round trip per fetch,
            # and one slow answer of a loaded server must not end it
            if not follow and (await sub.consumer_info()).num_pending == 0:
                return
            try:
                msgs = await sub.fetch(batch, timeout=1.0 if follow else 2.0)
            except TimeoutError:  # nats-py raises both its own and asyncio's TimeoutError here
                continue
            for m in msgs:
                seq = m.metadata.sequence.stream if m.metadata else 0
                headers = dict(m.headers or {})
                try:
                    yield StoredEvent(seq, Event.from_wire(m.data), m.data, headers, subject=m.subject)
                except InvalidInput as exc:
                    yield StoredEvent(seq, None, m.data, headers, exc.one_line(), m.subject)
    finally:
        with contextlib.suppress(Exception):  # the ephemeral consumer expires on its own anyway
            await sub.unsubscribe()


async def read_events(js: JetStreamContext, workload_id: str | None = None) -> list[StoredEvent]:
    """All stored events (of one workload, or all), in stream order."""
    return [e async for e in iter_events(js, workload_id)]


async def stored_earlier(js: JetStreamContext, subject: str, event_id: str, before_seq: int) -> int | None:
    """The sequence of an earlier copy of event ``event_id`` under ``subject``, if one is stored.

    An event is published once; the same event (same id, same signed bytes) at a later sequence
    is a replay, whatever ``Nats-Msg-Id`` the replayer chose to get past de-duplication. Walks
    the subject's messages before ``before_seq`` by direct gets (a workload has a handful per type).
    """
    seq = 1
    while seq < before_seq:
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return None
        if msg.seq is None or msg.seq >= before_seq:
            return None
        try:
            stored_id = json.loads(msg.data or b"").get("id")
        except (ValueError, AttributeError):
            stored_id = None
        if stored_id == event_id:
            return msg.seq
        seq = msg.seq + 1
    return None


async def workload_event(js: JetStreamContext, workload_id: str, event_type: EventType, *,
                         trust: InputTrust) -> Event:
    """The latest stored event of ``event_type`` for one workload (a direct lookup, no consumer).

    Stages use it to read what an earlier stage said about the same workload (the ``submitted``
    spec, the ``signed`` key resource…) instead of copying every field forward. The event is
    checked with ``trust`` like any input: a forged latest event is refused, never read.
    Raises :class:`InvalidInput` when the workload has no such event (or it does not parse), and
    :class:`~ccpipe.pipeline.event_trust.UntrustedEvent` when it cannot be trusted.
    """
    try:
        msg = await js.get_last_msg(EVENTS_STREAM, subject_for(workload_id, event_type))
    except NotFoundError as exc:
        raise InvalidInput(
            f"workload {workload_id} has no {event_type.value} event in {EVENTS_STREAM}",
            hint="the stage that publishes it has not run for this workload; resubmit it",
            code="event.missing",
        ) from exc
    return await trust.accept_current(msg.data or b"", msg.headers, msg.subject or subject_for(workload_id, event_type))
