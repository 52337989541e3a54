"""Replayed genuine events lead to nothing (issue 19, item 7), against a secured nats-server.

Each test lets a consumer handle a genuine event (its workload is then finished for that
consumer), then a client holding only the credential of the component allowed to publish that
type copies the stored event, signature and all, twice: under the same subject with a fresh
de-duplication id, and under a new workload id. Neither copy leads to anything downstream (a
bounded wait), and each leaves its refusal record: the runtime's count and log line, and the
verdict ``ccpipe events`` shows (``wrong-subject`` for the copy under a new id, ``replay`` for the second
copy of an id).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from ccpipe.enclave_runner.agent import NodeAgent
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.pipeline.bus import EVENTS_STREAM, connect_as
from ccpipe.pipeline.cli.events import Flagger
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.nats_auth import ADMIN, runner_identity
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.runtime import Output, StageRuntime, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event, Source, subject_for
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Signed
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.handler import attest_stages
from ccpipe.stages.sign.config import load_sign_config
from ccpipe.stages.sign.handler import sign_stages
from tests.genuine_events import as_emitter, genuine_publisher
from tests.integration.stages.attest.test_attest_build import built_event
from tests.integration.test_nats_least_privilege import secured  # noqa: F401 (the secured server fixture)
from tests.unit.stages.sign.sign_stage_helpers import RecordingKbs, make_built, submitted, verified_for

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "cd" * 32
QUIET_S = 2.0
"""How long nothing may follow a refused replay (the consumers answer a genuine input in ms)."""


@asynccontextmanager
async def as_identity(server: EmbeddedNats, settings: Settings, identity: str) -> AsyncIterator[NatsClient]:
    nc = await connect_as(settings, server.url, identity, name=f"t-{identity}")
    try:
        yield nc
    finally:
        await nc.close()


async def publish_genuine(server: EmbeddedNats, settings: Settings, event: Event) -> None:
    """Store ``event`` as the component that emits it would: its identity, its key."""
    async with as_identity(server, settings, as_emitter(event).source.component) as nc:
        await genuine_publisher(nc.jetstream(), settings.data_dir).publish(event)


async def replay(server: EmbeddedNats, settings: Settings, identity: str, genuine: Event, new_workload: str) -> None:
    """As ``identity`` alone: copy the stored genuine event, again under its subject and under a new workload id."""
    async with as_identity(server, settings, identity) as nc:
        js = nc.jetstream()
        stored = await js.get_last_msg(EVENTS_STREAM, genuine.nats_subject)
        headers = dict(stored.headers or {})
        assert stored.data is not None and "Ccpipe-Signature" in headers  # a genuine, signed event
        for n, subject in enumerate((genuine.nats_subject, subject_for(new_workload, genuine.type))):
            await js.publish(subject, stored.data, stream=EVENTS_STREAM,
                             headers={**headers, "Nats-Msg-Id": f"replay-{genuine.id}-{n}"})


async def downstream(server: EmbeddedNats, settings: Settings, workload_id: str, types: set[EventType]) -> list[Event]:
    async with as_identity(server, settings, ADMIN) as nc:
        return [s.event for s in await read_events(nc.jetstream(), workload_id) if s.event and s.event.type in types]


async def settle(server: EmbeddedNats, settings: Settings, rt: StageRuntime, durable: str, refused: int) -> None:
    """Wait (bounded) until the consumer went through everything and refused ``refused`` inputs, then a while more."""
    async with as_identity(server, settings, ADMIN) as nc:
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            info = await nc.jetstream().consumer_info(EVENTS_STREAM, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0 and rt.stats.get("refused", 0) >= refused:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(QUIET_S)


async def wait_downstream(server: EmbeddedNats, settings: Settings, workload_id: str, types: set[EventType]) -> None:
    for _ in range(300):
        if await downstream(server, settings, workload_id, types):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the genuine {workload_id} was not handled")


async def trail_flags(server: EmbeddedNats, settings: Settings, genuine: Event, new_workload: str) -> list[str | None]:
    """What ``ccpipe events`` shows for the genuine event and its two copies."""
    flagger = Flagger(settings)
    async with as_identity(server, settings, ADMIN) as nc:
        js = nc.jetstream()
        own = [s for s in await read_events(js, genuine.workload_id) if s.event and s.event.id == genuine.id]
        moved = [s for s in await read_events(js, new_workload) if s.event and s.event.id == genuine.id]
    return [flagger.flag(s) for s in (*own, *moved)]


async def check_refused(server: EmbeddedNats, settings: Settings, rt: StageRuntime, caplog: pytest.LogCaptureFixture,
                        genuine: Event, new_workload: str) -> None:
    # (the secured server's trail starts with an unsigned seed event, refused too)
    refusals = [r.getMessage() for r in caplog.records if f"refused input {genuine.id}" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "wrong-subject" in refusals[1] and "is a replay" in refusals[0], refusals
    assert await trail_flags(server, settings, genuine, new_workload) == [None, "replay", "wrong-subject"]


def secured_settings(secured: tuple[EmbeddedNats, Settings], tmp_path: Path, **kw: Any) -> Settings:  # noqa: F811
    # each test its own data directory (keys, images), the shared creds of the secured server
    base = secured[1]
    return base.model_copy(update={"data_dir": tmp_path / "data", "max_deliver": 3, "ack_wait_s": 10.0, **kw})


async def test_a_replayed_built_is_never_attested_again(
        secured: tuple[EmbeddedNats, Settings], tmp_path: Path, workload_id: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    server = secured[0]
    settings = secured_settings(secured, tmp_path, allow_emulated=True)
    genuine = built_event(workload_id, settings.data_dir)
    after = {EventType.ATTESTATION_VERIFIED, EventType.ATTESTATION_REJECTED, EventType.SIGNED, EventType.FAILED}
    async with run_stages(server.url, settings, attest_stages(settings, Endpoints(nats_url=server.url))) as rt:
        await publish_genuine(server, settings, genuine)
        await wait_downstream(server, settings, workload_id, after)
        before = rt.stats.get("refused", 0)
        await replay(server, settings, Component.BUILD, genuine, f"{workload_id}-new")
        await settle(server, settings, rt, "attest", before + 2)
    assert len(await downstream(server, settings, workload_id, after)) == 1  # the genuine one's, no second
    assert await downstream(server, settings, f"{workload_id}-new", after) == []
    await check_refused(server, settings, rt, caplog, genuine, f"{workload_id}-new")


async def test_a_replayed_attestation_is_never_signed_again(
        secured: tuple[EmbeddedNats, Settings], tmp_path: Path, workload_id: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    server = secured[0]
    settings = secured_settings(secured, tmp_path)
    built = make_built(tmp_path, settings.data_dir, workload_id)
    kbs = RecordingKbs()
    eps = Endpoints(nats_url=server.url, kbs_url="http://127.0.0.1:9", registry="127.0.0.1:5000")
    specs = sign_stages(settings, eps, config=load_sign_config(register_measurement=False), registrar=kbs)
    genuine = Event(type=EventType.ATTESTATION_VERIFIED, workload_id=workload_id, source=Source(component="attest"),
                    payload=verified_for(built))
    after = {EventType.SIGNED, EventType.FAILED}
    async with run_stages(server.url, settings, specs) as rt:
        await publish_genuine(server, settings, submitted(workload_id, tmp_path / "repo", "c" * 40))
        await publish_genuine(server, settings, Event(type=EventType.BUILT, workload_id=workload_id,
                                                      source=Source(component="build"), payload=built))
        await publish_genuine(server, settings, genuine)
        await wait_downstream(server, settings, workload_id, after)
        registered = list(kbs.calls)
        before = rt.stats.get("refused", 0)
        await replay(server, settings, Component.ATTEST, genuine, f"{workload_id}-new")
        await settle(server, settings, rt, "sign", before + 2)
    signed = await downstream(server, settings, workload_id, after)
    assert [e.type for e in signed] == [EventType.SIGNED]
    assert await downstream(server, settings, f"{workload_id}-new", after) == []
    assert kbs.calls == registered  # no key registered (or replaced) for either copy
    await check_refused(server, settings, rt, caplog, genuine, f"{workload_id}-new")


async def test_a_replayed_signed_is_never_pushed_again(
        secured: tuple[EmbeddedNats, Settings], tmp_path: Path, workload_id: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    server = secured[0]
    settings = secured_settings(secured, tmp_path)
    pushed: list[Event] = []

    async def push(event: Event) -> Sequence[Output]:
        # stands in for the registry push: what matters is whether the push stage's handler ever runs
        pushed.append(event)
        return [Output(EventType.PUSHED, Pushed(registry="r:5000", repository="ccpipe/x", image_digest=DIGEST,
                                                reference=f"docker://r:5000/ccpipe/x@{DIGEST}"))]

    genuine = Event(type=EventType.SIGNED, workload_id=workload_id, source=Source(component="sign"),
                    payload=Signed(image_digest=DIGEST, source_image_digest="sha256:" + "ef" * 32, layout="/x",
                                   key_resource=f"kbs:///ccpipe/{workload_id}/image-key",
                                   signature_digest="sha256:" + "01" * 32, initdata_digest="ab" * 32))
    async with run_stages(server.url, settings, [StageSpec("push", EventType.SIGNED, (EventType.PUSHED,), push)]) as rt:
        await publish_genuine(server, settings, genuine)
        await wait_downstream(server, settings, workload_id, {EventType.PUSHED})
        before = rt.stats.get("refused", 0)
        await replay(server, settings, Component.SIGN, genuine, f"{workload_id}-new")
        await settle(server, settings, rt, "push", before + 2)
    assert [e.workload_id for e in pushed if e.id == genuine.id] == [workload_id]
    assert await downstream(server, settings, f"{workload_id}-new", {EventType.PUSHED}) == []
    await check_refused(server, settings, rt, caplog, genuine, f"{workload_id}-new")


class RecordingLauncher:
    """Stands in for the launcher (KBS, sandbox): records what the node agent decided to launch."""

    def __init__(self) -> None:
        self.launched: list[Event] = []

    async def launch(self, scheduled: Event) -> None:
        self.launched.append(scheduled)


async def test_a_replayed_scheduled_is_never_launched_again(
        secured: tuple[EmbeddedNats, Settings], tmp_path: Path, workload_id: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    server = secured[0]
    settings = secured_settings(secured, tmp_path)
    node = RunnerNode("n1")
    launcher = RecordingLauncher()
    genuine = Event(type=EventType.SCHEDULED, workload_id=workload_id, source=Source(component="schedule"),
                    payload=Scheduled(node_id="n1", tee=TeeType.SNP, backend="emulated"))
    async with as_identity(server, settings, runner_identity("n1")) as nc:
        agent = NodeAgent(node, launcher, nc.jetstream(), input_trust(settings.data_dir))  # type: ignore[arg-type]
        async with run_stages(server.url, settings, [agent.stage()], instance="n1") as rt:
            await publish_genuine(server, settings, genuine)
            for _ in range(100):
                if launcher.launched:
                    break
                await asyncio.sleep(0.1)
            before = rt.stats.get("refused", 0)
            await replay(server, settings, Component.SCHEDULE, genuine, f"{workload_id}-new")
            await settle(server, settings, rt, runner_identity("n1"), before + 2)
    assert [e.workload_id for e in launcher.launched] == [workload_id]  # the genuine placement, once
    await check_refused(server, settings, rt, caplog, genuine, f"{workload_id}-new")
