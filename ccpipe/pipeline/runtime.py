"""The stage runtime: consume, retry, publish, acknowledge, dead-letter — in one place.

A stage is declared as a :class:`StageSpec`: its name (the durable consumer), its input event
type and a handler that turns the input event into output payloads. The runtime:

* binds a durable pull consumer filtered on ``ccpipe.evt.*.<input type>`` (replicas sharing
  the durable share the work; ``batch_size=1`` keeps per-consumer order);
* retries a :class:`TransientError` in process with tenacity (bounded, jittered), then naks
  with a delay so the server redelivers;
* publishes every output with ``Nats-Msg-Id`` = hash(workload, output type, input id), so a
  redelivered input never yields a second output, and acks the input only after the server
  confirmed the outputs are stored (running the stage's ``after_stored`` cleanup in between);
* while a handler runs, marks its input in progress every third of ``ack_wait``
  (:func:`kept_in_progress`), so a slow build or sign is never redelivered to another replica
  while it still runs;
* on a permanent error, or on the last delivery, publishes one ``failed`` event (stage, code,
  message, hint) and terminates the input;
* before the handler sees an input, checks it with :class:`~ccpipe.pipeline.event_trust.InputTrust`
  (signed by a registered key of a component allowed to emit its type, stored under its own
  subject) and refuses a replay (the same event id already stored earlier under the subject). An
  input that fails is acknowledged, logged and counted (``stats["refused"]``), and yields **no**
  ``failed`` event: the audit log flags a forged one itself, and a ``failed`` event for the
  workload a forger or replayer names would let anyone fail any workload with one message.

Handlers never ack or nak themselves, and the error class — never the message text — decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher
from ccpipe.pipeline.event_trust import InputTrust, UntrustedEvent, input_trust
from ccpipe.pipeline.nats_auth import inbox_prefix
from ccpipe.pipeline.reader import stored_earlier, workload_event
from ccpipe.pipeline.telemetry.metrics import STAGE_DURATION, STAGE_HANDLED
from ccpipe.pipeline.telemetry.tracing import consumer_span, mark_outcome
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import SUBJECT_PREFIX, Event, Source, Subject, derived_msg_id, input_filter
from ccpipe.schemas.errors import CcpipeError, InvalidInput, TransientError
from ccpipe.schemas.events import EventType, Failed
from ccpipe.schemas.failure import FailureReason

log = logging.getLogger("ccpipe.runtime")

EVENTS = JStream(name=EVENTS_STREAM, declare=False)
"""The trail stream as FastStream sees it: never declared or updated by FastStream."""


@dataclass(frozen=True)
class Output:
    """One event a handler asks the runtime to publish."""

    type: EventType
    payload: BaseModel
    subject: Subject | None = None


Handler = Callable[[Event], Awaitable[Sequence[Output]]]


class StageBus:
    """The stage's own runtime connection, for a handler that reads more of the bus than its input
    (earlier events of the workload, KV buckets).

    :func:`~ccpipe.pipeline.stagehost.run_stages` binds it to the connection the stage consumes
    and publishes on (the stage's identity) and unbinds it when the stages stop, so a handler
    opens no connection of its own and leaves none behind.
    """

    def __init__(self) -> None:
        """Unbound until the stage runs."""
        self._js: JetStreamContext | None = None

    def bind(self, js: JetStreamContext | None) -> None:
        """Use ``js`` (the stage's running connection) from now on; None when the stage stops."""
        self._js = js

    @asynccontextmanager
    async def session(self) -> AsyncIterator[JetStreamContext]:
        """The stage's JetStream context for the block; :class:`TransientError` while the stage is not running."""
        if self._js is None:
            raise TransientError("the stage is not connected to NATS (not started, or stopping)",
                                 code="runtime.bus.unbound")
        yield self._js


EventLookup = Callable[[str, EventType], Awaitable[Event]]
"""``lookup(workload_id, type)`` → the workload's latest event of that type (raises InvalidInput if none)."""


def trail_lookup(settings: Settings, bus: StageBus, stage: str) -> EventLookup:
    """An :data:`EventLookup` over ``stage``'s own runtime connection; each event is checked as an input
    is (a forged latest event is refused, never read), a NATS failure is a :class:`TransientError`."""
    trust = input_trust(settings.data_dir)

    async def lookup(workload_id: str, event_type: EventType) -> Event:
        try:
            async with bus.session() as js:
                return await workload_event(js, workload_id, event_type, trust=trust)
        except (NatsError, OSError) as exc:
            raise TransientError(f"reading the {event_type.value} event of {workload_id} failed: {exc!r}",
                                 code=f"{stage}.trail") from exc

    return lookup


@dataclass(frozen=True)
class StageSpec:
    """A stage: durable name, input type, output types (for the AsyncAPI document) and handler."""

    name: str
    input_type: EventType
    output_types: tuple[EventType, ...]
    handler: Handler
    description: str = ""
    hint: str = ""
    bus: StageBus | None = None
    """Bound to the stage's connection while it runs, for a handler that reads more of the bus."""
    after_stored: Callable[[Event], Awaitable[None]] | None = None
    """Run once the outputs of an input are stored, before the input is acknowledged: a cleanup that
    must not come earlier (the purge of the input's artifact, which a redelivery before the outputs
    were stored would still need). A failure is only logged."""


@dataclass
class StageRuntime:
    """Runs :class:`StageSpec` handlers with the acknowledgement rules above."""

    settings: Settings
    publisher: Callable[[], EventPublisher]
    instance: str = ""
    nak_base_delay_s: float = 1.0
    stats: dict[str, int] = field(default_factory=dict)
    publisher_for: Callable[[str], EventPublisher] | None = None
    """The publisher of one stage (its own bus identity); unset = :attr:`publisher` for every stage."""
    trust: InputTrust = field(kw_only=True)
    """Checks each input before its handler runs."""

    def source(self, stage: str) -> Source:
        """The envelope source of events this runtime emits for ``stage``."""
        return Source(component=stage, instance=self.instance)

    async def _publish(self, event: Event, msg_id: str) -> None:
        # events are published as the stage that emits them (its source component)
        publisher = self.publisher_for(event.source.component) if self.publisher_for else self.publisher()
        await publisher.publish(event, msg_id)

    async def publish_failed(
        self, stage: str, workload_id: str, reason: FailureReason, *, input_event: Event | None,
        input_id: str, input_type: str | None, attempts: int,
    ) -> None:
        """Publish the one ``failed`` event for an input (de-duplicated on the input id)."""
        failed = Event(
            type=EventType.FAILED,
            workload_id=workload_id,
            source=self.source(stage),
            subject=input_event.subject if input_event else Subject(),
            causation_id=input_event.id if input_event else None,
            payload=Failed(reason=reason, input_event_id=input_id, input_type=input_type, attempts=attempts),
        )
        await self._publish(failed, derived_msg_id(workload_id, EventType.FAILED, input_id))
        self.stats["failed"] = self.stats.get("failed", 0) + 1

    def _nak_delay(self, delivered: int) -> float:
        # Full jitter, exponential in the delivery count, capped so a stage never sleeps for long.
        return random.uniform(0, min(30.0, self.nak_base_delay_s * 2 ** (delivered - 1)))

    async def process(self, spec: StageSpec, msg: NatsMessage) -> None:
        """Handle one delivery of an input message (see the module docstring), timed, counted by
        outcome and traced as a span whose parent published the input."""
        raw = msg.raw_message
        started = time.perf_counter()
        parts = raw.subject.split(".")
        attributes = {"ccpipe.stage": spec.name, "messaging.destination.name": raw.subject,
                      "ccpipe.workload_id": parts[2] if len(parts) > 2 else ""}
        with consumer_span(f"{spec.name} {spec.input_type.value}", raw.headers, attributes) as span:
            outcome = await self._settle(spec, msg)
            mark_outcome(span, outcome, None if outcome == "ok" else f"{spec.name}: {outcome}")
        STAGE_HANDLED.labels(spec.name, outcome).inc()
        STAGE_DURATION.labels(spec.name).observe(time.perf_counter() - started)

    async def _settle(self, spec: StageSpec, msg: NatsMessage) -> str:
        # returns the outcome: ok, refused, retried or failed
        raw = msg.raw_message
        delivered = raw.metadata.num_delivered if raw.metadata else 1
        last = delivered >= self.settings.max_deliver
        input_id = raw.headers.get("Ccpipe-Event-Id", "") if raw.headers else ""
        input_id = input_id or f"seq-{raw.metadata.sequence.stream if raw.metadata else 0}"
        workload_id = _workload_from_subject(raw.subject)
        event: Event | None = None
        try:
            try:
                event = await self.trust.accept_current(raw.data, raw.headers, raw.subject)
                await self._refuse_replay(spec, event, raw.subject, raw.metadata.sequence.stream if raw.metadata else 0)
            except UntrustedEvent as exc:
                log.warning("stage %s: refused input %s (seq %s): %s", spec.name, input_id,
                            raw.metadata.sequence.stream if raw.metadata else "?", exc.one_line())
                self.stats["refused"] = self.stats.get("refused", 0) + 1
                await msg.ack()  # acted on never, redelivered never: the trail keeps it, flagged
                return "refused"
            async with kept_in_progress(raw, self.settings.ack_wait_s):
                outputs = await self._call_with_retries(spec, event)
            for i, out in enumerate(outputs):
                result = Event(
                    type=out.type,
                    workload_id=event.workload_id,
                    source=self.source(spec.name),
                    subject=out.subject or event.subject,
                    causation_id=event.id,
                    payload=out.payload,
                )
                key = event.id if i == 0 else f"{event.id}#{i}"
                await self._publish(result, derived_msg_id(event.workload_id, out.type, key))
            await self._after_stored(spec, event)
            await msg.ack()
            self.stats["ok"] = self.stats.get("ok", 0) + 1
            return "ok"
        except TransientError as exc:
            return await self._transient(spec, msg, exc, event, input_id, workload_id, delivered, last)
        except CcpipeError as exc:
            log.warning("stage %s: %s failed permanently: %s", spec.name, input_id, exc.one_line())
            await self._fail(spec, msg, exc.reason(spec.name), event, input_id, workload_id, delivered)
            return "failed"
        except Exception as exc:  # a bug or an unforeseen failure: retried like a transient one
            log.exception("stage %s: unexpected error on %s (delivery %d)", spec.name, input_id, delivered)
            err = TransientError(
                f"{spec.name} raised {type(exc).__name__}: {exc}",
                hint=spec.hint or f"this is a defect in the {spec.name} stage; report it with the input event id",
                code=f"{spec.name}.internal",
            )
            return await self._transient(spec, msg, err, event, input_id, workload_id, delivered, last)

    @staticmethod
    async def _after_stored(spec: StageSpec, event: Event) -> None:
        if spec.after_stored is None:
            return
        try:
            await spec.after_stored(event)
        except Exception as exc:  # the outputs are stored: a failed cleanup must not redo the work
            log.warning("stage %s: cleanup after %s failed: %r", spec.name, event.id, exc)

    async def _refuse_replay(self, spec: StageSpec, event: Event, subject: str, seq: int) -> None:
        # A redelivery is the same stream message again (handled by the output de-duplication);
        # the same event stored again at a later sequence is a replay and is refused.
        js = (self.publisher_for(spec.name) if self.publisher_for else self.publisher()).js
        try:
            earlier = await stored_earlier(js, subject, event.id, seq) if seq else None
        except (NatsError, OSError) as exc:
            raise TransientError(f"checking {event.id} for an earlier copy failed: {exc!r}",
                                 code="runtime.trail") from exc
        if earlier is not None:
            raise UntrustedEvent(f"event {event.id} was already stored at seq {earlier}: this copy is a replay",
                                 code="event.replayed", hint="only the first copy of an event is acted on")

    async def _transient(
        self, spec: StageSpec, msg: NatsMessage, exc: TransientError, event: Event | None,
        input_id: str, workload_id: str, delivered: int, last: bool,
    ) -> str:
        if last:
            reason = exc.reason(spec.name)
            reason = reason.model_copy(
                update={"message": f"{reason.message} (gave up after {delivered} deliveries)"}
            )
            await self._fail(spec, msg, reason, event, input_id, workload_id, delivered)
            return "failed"
        self.stats["retried"] = self.stats.get("retried", 0) + 1
        await msg.nack(delay=self._nak_delay(delivered))
        return "retried"

    async def _fail(
        self, spec: StageSpec, msg: NatsMessage, reason: FailureReason, event: Event | None,
        input_id: str, workload_id: str, delivered: int,
    ) -> None:
        await self.publish_failed(
            spec.name, workload_id, reason, input_event=event, input_id=input_id,
            input_type=event.type.value if event else None, attempts=delivered,
        )
        await msg.reject()

    async def _call_with_retries(self, spec: StageSpec, event: Event) -> Sequence[Output]:
        result: Sequence[Output] = ()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.settings.retry_attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                result = await spec.handler(event)
        return result

    def register(self, router: NatsRouter | NatsBroker, spec: StageSpec) -> None:
        """Add ``spec``'s subscriber (and, for the AsyncAPI document, its publishers) to ``router``."""
        subscriber = router.subscriber(
            input_filter(spec.input_type),
            stream=EVENTS,
            durable=spec.name,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            config=ConsumerConfig(
                max_deliver=self.settings.max_deliver,
                ack_wait=self.settings.ack_wait_s,
                max_ack_pending=1000,
            ),
            ack_policy=AckPolicy.MANUAL,
            # the stage's identity is its name; its pull replies come to that identity's private inboxes
            inbox_prefix=f"{inbox_prefix(spec.name)}.".encode(),
            title=f"{spec.name}: on {spec.input_type.value}",
            description=spec.description or None,
        )

        async def consume(msg: NatsMessage) -> None:
            # No body parameter: the runtime parses the raw bytes itself, so a malformed event
            # becomes a `failed` event instead of a FastStream validation error.
            await self.process(spec, msg)

        consume.__doc__ = spec.description
        subscriber(consume)
        for out in (*spec.output_types, EventType.FAILED):
            router.publisher(
                f"{SUBJECT_PREFIX}.{{workload_id}}.{out.value}",
                stream=EVENTS,
                schema=Event,
                title=f"{spec.name}: {out.value}",
                description=f"Published by the {spec.name} stage.",
            )


IN_PROGRESS_FRACTION = 1 / 3
"""A running handler's input is marked in progress every ``ack_wait × this`` seconds: two marks
may be lost (or late) before the server would hand the input to another replica."""


@asynccontextmanager
async def kept_in_progress(msg: Msg, ack_wait_s: float) -> AsyncIterator[None]:
    """While the block runs, tell the server every third of ``ack_wait`` that ``msg`` is still worked on.

    A slow build or sign would otherwise be redelivered to a second replica after ``ack_wait``
    while the first still runs. A mark that cannot be sent (NATS reconnecting) is skipped: the
    next one, or the redelivery's output de-duplication, covers it.
    """

    async def mark() -> None:
        while True:
            await asyncio.sleep(ack_wait_s * IN_PROGRESS_FRACTION)
            try:
                await msg.in_progress()
            except (NatsError, OSError) as exc:
                log.warning("marking %s in progress failed: %r", msg.subject, exc)

    task = asyncio.create_task(mark(), name=f"in-progress {msg.subject}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _workload_from_subject(subject: str) -> str:
    parts = subject.split(".")
    if len(parts) >= 4 and f"{parts[0]}.{parts[1]}" == SUBJECT_PREFIX:
        return parts[2]
    raise InvalidInput(f"subject {subject!r} is not a ccpipe event subject", code="event.subject")


def stage_outputs(*items: tuple[EventType, BaseModel]) -> list[Output]:
    """Shorthand for handlers: ``return stage_outputs((EventType.BUILT, built))``."""
    return [Output(t, p) for t, p in items]


__all__ = ["EVENTS", "Handler", "Output", "StageBus", "StageRuntime", "StageSpec", "kept_in_progress", "stage_outputs"]
