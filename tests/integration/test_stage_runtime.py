"""The stage runtime against a real nats-server: exactly-once outputs, retries, dead letters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.runtime import Output, StageRuntime, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import InvalidInput, TransientError
from ccpipe.schemas.events import EventType, Failed, WorkloadExited, WorkloadRunning

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "ab" * 32


def running(workload_id: str, component: str = "runner") -> Event:
    return Event(
        type=EventType.WORKLOAD_RUNNING, workload_id=workload_id, source=Source(component=component),
        payload=WorkloadRunning(node_id="n1", image_digest=DIGEST),
    )


def signed_publisher(js: JetStreamContext) -> EventPublisher:
    """Publishes as the components would: signed with the keys the stages under test trust."""
    return EventPublisher(js, signer=event_signer(load_settings().data_dir))


def exited_for(event: Event) -> list[Output]:
    return [Output(EventType.WORKLOAD_EXITED, WorkloadExited(
        node_id="n1", exit_code=0, duration_s=0.1, output_digest=DIGEST))]


async def wait_for(js: JetStreamContext, workload_id: str, etype: EventType, count: int = 1,
                   timeout: float = 20.0) -> list[Event]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [s.event for s in await read_events(js, workload_id) if s.event and s.event.type == etype]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


def settings(**kw: object) -> Settings:
    base = {"max_deliver": 3, "ack_wait_s": 2.0, "retry_attempts": 2}
    return load_settings(**{**base, **kw})


async def test_output_published_and_input_acked(nats_server: EmbeddedNats, js: JetStreamContext,
                                                workload_id: str) -> None:
    spec = StageSpec("t-ok", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,),
                     lambda e: _async(exited_for(e)))
    async with run_stages(nats_server.url, settings(), [spec]) as rt:
        src = running(workload_id)
        await signed_publisher(js).publish(src)
        out = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED)
        assert len(out) == 1
        assert out[0].causation_id == src.id and out[0].source.component == "t-ok"
        await asyncio.sleep(0.5)
        info = await js.consumer_info(EVENTS_STREAM, "t-ok")
        assert info.num_ack_pending == 0 and rt.stats.get("ok", 0) >= 1


async def _async(value: Sequence[Output]) -> Sequence[Output]:
    return value


async def test_transient_error_is_retried_then_succeeds(nats_server: EmbeddedNats, js: JetStreamContext,
                                                        workload_id: str) -> None:
    calls: list[int] = []

    async def flaky(event: Event) -> Sequence[Output]:
        if event.workload_id != workload_id:  # the stream is shared with other tests
            return exited_for(event)
        calls.append(1)
        if len(calls) < 3:  # fails on the first delivery (2 in-process tries), succeeds on redelivery
            raise TransientError("registry busy")
        return exited_for(event)

    spec = StageSpec("t-flaky", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), flaky)
    async with run_stages(nats_server.url, settings(), [spec], nak_base_delay_s=0.05):
        await signed_publisher(js).publish(running(workload_id))
        out = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED)
    assert len(out) == 1 and len(calls) == 3
    assert not await wait_for(js, workload_id, EventType.FAILED, timeout=0.1)


async def test_poisoned_input_ends_in_one_failed_event(nats_server: EmbeddedNats, js: JetStreamContext,
                                                       workload_id: str) -> None:
    calls: list[int] = []

    async def poisoned(event: Event) -> Sequence[Output]:
        if event.workload_id != workload_id:
            return exited_for(event)
        calls.append(1)
        raise RuntimeError("boom: cannot handle this input")

    spec = StageSpec("t-poison", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), poisoned)
    async with run_stages(nats_server.url, settings(retry_attempts=1), [spec], nak_base_delay_s=0.05):
        src = running(workload_id)
        await signed_publisher(js).publish(src)
        failed = await wait_for(js, workload_id, EventType.FAILED)
        await asyncio.sleep(3.0)  # longer than ack_wait: no further delivery, no second failed event
        failed = await wait_for(js, workload_id, EventType.FAILED, timeout=0.1)
    assert len(calls) == 3  # max_deliver
    assert len(failed) == 1
    payload = failed[0].payload
    assert isinstance(payload, Failed)
    assert payload.reason.stage == "t-poison" and payload.attempts == 3
    assert "RuntimeError" in payload.reason.message and payload.reason.hint
    assert payload.input_event_id == src.id
    assert not await wait_for(js, workload_id, EventType.WORKLOAD_EXITED, timeout=0.1)


async def test_permanent_error_fails_at_once(nats_server: EmbeddedNats, js: JetStreamContext,
                                             workload_id: str) -> None:
    calls: list[int] = []

    async def refuse(event: Event) -> Sequence[Output]:
        if event.workload_id != workload_id:
            return exited_for(event)
        calls.append(1)
        raise InvalidInput("the image digest is not allowed", hint="push another image", code="t.refused")

    spec = StageSpec("t-refuse", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), refuse)
    async with run_stages(nats_server.url, settings(), [spec]):
        await signed_publisher(js).publish(running(workload_id))
        failed = await wait_for(js, workload_id, EventType.FAILED)
        await asyncio.sleep(2.5)
    assert len(calls) == 1 and len(failed) == 1
    assert isinstance(failed[0].payload, Failed) and failed[0].payload.reason.code == "t.refused"


CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from faststream.nats import NatsMessage
    from ccpipe.pipeline.runtime import Output, StageRuntime, StageSpec
    from ccpipe.pipeline.settings import Settings, load_settings
    from ccpipe.pipeline.stagehost import run_stages
    from ccpipe.schemas.events import EventType, WorkloadExited

    real_ack = NatsMessage.ack
    async def ack_then_die(self):
        # The output has been stored; die before the input is acked.
        if self.raw_message.subject.split(".")[2] == sys.argv[2]:
            os._exit(9)
        await real_ack(self)
    NatsMessage.ack = ack_then_die

    async def handler(event):
        return [Output(EventType.WORKLOAD_EXITED, WorkloadExited(
            node_id="n1", exit_code=0, duration_s=0.1, output_digest="sha256:" + "ab" * 32))]

    async def main():
        spec = StageSpec("t-crash", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), handler)
        settings = load_settings(max_deliver=5, ack_wait_s=2.0)
        async with run_stages(sys.argv[1], settings, [spec]):
            print("ready", flush=True)
            await asyncio.sleep(60)
    asyncio.run(main())
""")


async def test_killed_after_publish_before_ack_yields_one_output(
        nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, nats_server.url, workload_id], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == b"ready"
    src = running(workload_id)
    await signed_publisher(js).publish(src)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 9, "the stage process should have died between publish and ack"
    first = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED)
    assert len(first) == 1

    # A healthy replica takes over the same durable; the input is redelivered after ack_wait.
    spec = StageSpec("t-crash", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,),
                     lambda e: _async(exited_for(e)))
    async with run_stages(nats_server.url, settings(max_deliver=5), [spec]) as rt:
        deadline = asyncio.get_running_loop().time() + 20
        while rt.stats.get("ok", 0) < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert rt.stats.get("ok", 0) >= 1, "the input was not redelivered to the new replica"
        await asyncio.sleep(0.5)
        info = await js.consumer_info(EVENTS_STREAM, "t-crash")
    outputs = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED, timeout=0.1)
    assert len(outputs) == 1, "redelivery must not produce a second output"
    assert info.num_ack_pending == 0


async def drained(js: JetStreamContext, durable: str, rt: StageRuntime) -> ConsumerInfo:
    """The consumer's state once it went through every input and refused one (bounded), and a while after.

    The stream holds other tests' inputs too: a new durable goes through all of them first.
    """
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        info = await js.consumer_info(EVENTS_STREAM, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0 and rt.stats.get("refused", 0):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    info = await js.consumer_info(EVENTS_STREAM, durable)
    assert isinstance(info, ConsumerInfo)
    return info


@pytest.mark.parametrize("forgery", ["unsigned", "not-emitter", "wrong-subject"])
async def test_an_input_it_cannot_trust_is_acked_and_never_handled(
        nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str, forgery: str) -> None:
    handled: list[Event] = []

    async def handler(event: Event) -> Sequence[Output]:
        handled.append(event)
        return exited_for(event)

    spec = StageSpec("t-trust", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), handler)
    async with run_stages(nats_server.url, settings(), [spec]) as rt:
        if forgery == "unsigned":
            await EventPublisher(js).publish(running(workload_id))
        elif forgery == "not-emitter":  # the build component's genuine key on a type only runners emit
            await signed_publisher(js).publish(running(workload_id, component="build"))
        else:  # a genuine runner event of another workload, stored again under this one's subject
            genuine = running(f"{workload_id}-other")
            data = genuine.canonical_bytes()
            headers = event_signer(load_settings().data_dir)(genuine, data)
            await js.publish(f"ccpipe.evt.{workload_id}.workload.running", data, stream=EVENTS_STREAM,
                             headers=headers)
        info = await drained(js, "t-trust", rt)
    assert rt.stats.get("refused", 0) >= 1
    assert [e for e in handled if e.workload_id == workload_id] == []
    assert info.num_ack_pending == 0 and info.num_redelivered == 0  # acked at once, never redelivered
    # no output, and no `failed` either: a forger must not be able to fail a workload it names
    assert [s.event.type for s in await read_events(js, workload_id) if s.event] == [EventType.WORKLOAD_RUNNING]


async def test_the_same_event_stored_again_is_a_replay_and_refused(
        nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str) -> None:
    handled: list[Event] = []

    async def handler(event: Event) -> Sequence[Output]:
        handled.append(event)
        return exited_for(event)

    spec = StageSpec("t-replay", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), handler)
    genuine = running(workload_id)
    async with run_stages(nats_server.url, settings(), [spec]) as rt:
        await signed_publisher(js).publish(genuine)
        assert len(await wait_for(js, workload_id, EventType.WORKLOAD_EXITED)) == 1
        stored = next(s for s in await read_events(js, workload_id) if s.event and s.event.id == genuine.id)
        # the genuine bytes and signature again, under a new de-duplication id
        await js.publish(genuine.nats_subject, stored.data, stream=EVENTS_STREAM,
                         headers={**stored.headers, "Nats-Msg-Id": "replay-1"})
        await drained(js, "t-replay", rt)
    # handled once: the output's de-duplication id alone would hide a second run only within the window
    assert [e.id for e in handled if e.workload_id == workload_id] == [genuine.id]
    assert not await wait_for(js, workload_id, EventType.FAILED, timeout=0.1)


async def test_a_handler_longer_than_ack_wait_is_kept_alive_not_redelivered(
        nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str) -> None:
    # Two replicas share one durable; the handler runs 3 × ack_wait. Without in-progress marks the
    # server would hand the input to the other replica after 2 s.
    calls: list[str] = []

    async def slow(event: Event) -> Sequence[Output]:
        if event.workload_id != workload_id:
            return []  # the stream holds other tests' inputs too: a new durable goes through them first
        calls.append(event.id)
        await asyncio.sleep(6.0)
        return exited_for(event)

    spec = StageSpec("t-slow", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), slow)
    async with run_stages(nats_server.url, settings(), [spec], instance="a") as first, \
            run_stages(nats_server.url, settings(), [spec], instance="b") as second:
        await signed_publisher(js).publish(running(workload_id))
        outputs = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED, timeout=20)
        await asyncio.sleep(1.0)
        info = await js.consumer_info(EVENTS_STREAM, "t-slow")
    assert len(outputs) == 1
    assert len(calls) == 1, f"the input ran {len(calls)} times"
    assert first.stats.get("retried", 0) + second.stats.get("retried", 0) == 0
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_after_stored_runs_once_the_output_is_stored_and_its_failure_does_not_redo_the_work(
        nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str) -> None:
    seen: list[int] = []  # how many outputs the trail held when the cleanup ran
    handled: list[str] = []

    async def handle(event: Event) -> Sequence[Output]:
        if event.workload_id == workload_id:  # the stream may hold other tests' inputs
            handled.append(event.id)
        return exited_for(event)

    async def cleanup(event: Event) -> None:
        if event.workload_id == workload_id:
            seen.append(len(await wait_for(js, event.workload_id, EventType.WORKLOAD_EXITED, timeout=0)))
        raise OSError("the artifact store is gone")  # logged only: the outputs are stored

    spec = StageSpec("t-after", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), handle,
                     after_stored=cleanup)
    async with run_stages(nats_server.url, settings(), [spec]) as rt:
        await signed_publisher(js).publish(running(workload_id))
        out = await wait_for(js, workload_id, EventType.WORKLOAD_EXITED)
        await asyncio.sleep(2.5)  # past ack_wait: an unacknowledged input would be delivered again
        info = await js.consumer_info(EVENTS_STREAM, "t-after")
    assert len(out) == 1 and seen == [1] and len(handled) == 1
    assert info.num_ack_pending == 0 and rt.stats.get("ok", 0) >= 1
