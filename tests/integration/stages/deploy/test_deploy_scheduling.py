"""Scheduling against a real nats-server with runner-like node processes announcing different TEEs.

The ``schedule`` stage runs under the real stage runtime and the scheduler service beside it;
nodes are separate processes heartbeating through ``node_heartbeat``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import (
    EventType,
    Failed,
    Pushed,
    Scheduled,
    SchedulingPending,
    Submitted,
    WorkloadExited,
    WorkloadRunning,
)
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.deploy.handler import deploy_stages
from ccpipe.stages.deploy.scheduler_service import serve_scheduler
from tests.genuine_events import genuine_publisher
from tests.integration.stages.deploy.node_helpers import StartNode, unique, wait_nodes

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "cd" * 32
LOST_GRACE_S = 1.0
"""The scheduler's grace before a running workload of a gone node is declared lost (30 s by default)."""


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """This module's own nats-server: the spreading asserted here counts every placement on the trail,
    and workloads other modules pushed on the shared server would be scheduled onto these nodes too."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats-scheduling")).start()
    yield server
    server.stop()


@pytest.fixture
async def scheduler(nats_server: Any) -> AsyncIterator[None]:
    """The schedule stage and the scheduler service, running."""
    settings = load_settings(nats_url=nats_server.url, max_deliver=3, ack_wait_s=5.0, retry_attempts=2)
    eps = Endpoints(nats_url=nats_server.url)
    specs = [s for s in deploy_stages(settings, eps) if s.name == "schedule"]
    async with run_stages(nats_server.url, settings, specs, instance="test"), \
            serve_scheduler(settings, eps, interval=0.2, lost_grace_s=LOST_GRACE_S):
        yield


async def submit(js: JetStreamContext, wl: str, tee: dict[str, Any]) -> None:
    """Publish a workload's ``submitted`` and ``pushed`` events, as the earlier stages would."""
    spec = WorkloadSpec.model_validate({"workload": {"name": "hello"}, "tee": tee})
    pub = genuine_publisher(js)
    await pub.publish(Event(type=EventType.SUBMITTED, workload_id=wl, source=Source(component="test"),
                            payload=Submitted(repo="/r", ref="refs/heads/main", old_commit="0" * 40,
                                              new_commit="1" * 40, pusher="t", spec=spec)))
    await pub.publish(Event(type=EventType.PUSHED, workload_id=wl, source=Source(component="test"),
                            payload=Pushed(registry="r:5000", repository="ccpipe/hello", image_digest=DIGEST,
                                           reference=f"docker://r:5000/ccpipe/hello@{DIGEST}")))


async def events_of(js: JetStreamContext, wl: str, etype: EventType, count: int = 1,
                    timeout: float = 40.0) -> list[Event]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [s.event for s in await read_events(js, wl) if s.event and s.event.type == etype]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


def placed(event: Event) -> Scheduled:
    assert isinstance(event.payload, Scheduled)
    return event.payload


async def test_snp_only_workloads_land_only_on_snp_nodes_and_spread(
    js: JetStreamContext, start_node: StartNode, scheduler: None
) -> None:
    snp = [unique("snp-a"), unique("snp-b")]
    others = [unique("tdx"), unique("sgx"), unique("emu-snp")]
    for node_id in snp:
        await start_node(node_id, "snp", "--total", "10")
    await start_node(others[0], "tdx", "--total", "50")
    await start_node(others[1], "sgx", "--total", "50")
    await start_node(others[2], "snp", "--emulated", "--total", "50")  # emulated: refused below
    workloads = [unique("w") for _ in range(4)]
    for wl in workloads:
        await submit(js, wl, {"types": ["snp"], "allow_emulated": False})
        await events_of(js, wl, EventType.SCHEDULED)  # one at a time, so each sees the load of the last
    chosen = []
    for wl in workloads:
        got = await events_of(js, wl, EventType.SCHEDULED)
        assert len(got) == 1, f"{wl} was not scheduled"
        chosen.append(placed(got[0]).node_id)
        assert placed(got[0]).tee.value == "snp" and got[0].subject.node == placed(got[0]).node_id
    assert set(chosen) == set(snp)  # never tdx, sgx or the emulated node; both SNP nodes used
    # least-loaded spreading: counting every placement on the two nodes (other tests' leftover
    # workloads may land there too), their loads differ by at most one
    latest: dict[str, str] = {}
    for stored in await read_events(js):
        if stored.event and isinstance(stored.event.payload, Scheduled):
            latest[stored.event.workload_id] = stored.event.payload.node_id
    loads = [list(latest.values()).count(n) for n in snp]
    assert abs(loads[0] - loads[1]) <= 1, loads


async def test_short_workloads_are_shared_among_idle_nodes(
    js: JetStreamContext, start_node: StartNode, scheduler: None
) -> None:
    # Each workload ends before the next is submitted, so all three nodes are idle at every
    # choice; 58 of 60 such workloads once went to the node whose name sorts first.
    nodes = sorted(unique("sample") for _ in range(3))
    for node_id in nodes:
        await start_node(node_id, "sample", "--total", "2")
    pub, counts = genuine_publisher(js), dict.fromkeys(nodes, 0)
    for _ in range(30):
        wl = unique("short")
        await submit(js, wl, {"types": ["sample"], "allow_emulated": False})
        got = await events_of(js, wl, EventType.SCHEDULED)
        assert len(got) == 1, f"{wl} was not scheduled"
        node_id = placed(got[0]).node_id
        counts[node_id] += 1
        await pub.publish(Event(type=EventType.WORKLOAD_RUNNING, workload_id=wl, source=Source(component="test"),
                                payload=WorkloadRunning(node_id=node_id, image_digest=DIGEST)))
        await pub.publish(Event(type=EventType.WORKLOAD_EXITED, workload_id=wl, source=Source(component="test"),
                                payload=WorkloadExited(node_id=node_id, exit_code=0, duration_s=0.01,
                                                       output_digest=DIGEST)))
    assert all(n >= 6 for n in counts.values()), counts


async def test_waiting_workload_is_placed_when_a_fitting_node_starts(
    js: JetStreamContext, start_node: StartNode, scheduler: None
) -> None:
    old_tdx = unique("tdx-old")
    await start_node(old_tdx, "tdx", "--tcb", "tdx_module=5")
    wl = unique("w")
    await submit(js, wl, {"types": ["tdx"], "allow_emulated": False, "min_tcb": {"tdx_module": 7}})
    pending = await events_of(js, wl, EventType.SCHEDULING_PENDING)
    assert len(pending) == 1
    why = pending[0].payload
    assert isinstance(why, SchedulingPending)
    assert f"{old_tdx}: TCB tdx_module 5 < 7" in why.reason
    assert why.wanted["min_tcb"] == {"tdx_module": 7}
    await asyncio.sleep(1.0)
    assert await events_of(js, wl, EventType.SCHEDULED, timeout=0) == []  # it waits, it does not fail
    assert await events_of(js, wl, EventType.FAILED, timeout=0) == []
    new_tdx = unique("tdx-new")
    await start_node(new_tdx, "tdx", "--tcb", "tdx_module=8")
    got = await events_of(js, wl, EventType.SCHEDULED)
    assert len(got) == 1 and placed(got[0]).node_id == new_tdx
    assert got[0].causation_id == pending[0].id and placed(got[0]).attempt == 1


async def test_killing_a_node_reschedules_work_that_had_not_started(
    js: JetStreamContext, start_node: StartNode, scheduler: None
) -> None:
    doomed = unique("snp-doomed")
    proc = await start_node(doomed, "snp", "--total", "10")
    waiting, running = unique("w"), unique("w")
    for wl in (waiting, running):
        await submit(js, wl, {"types": ["snp"], "allow_emulated": False})
        first = await events_of(js, wl, EventType.SCHEDULED)
        assert placed(first[0]).node_id == doomed
    await genuine_publisher(js).publish(Event(type=EventType.WORKLOAD_RUNNING, workload_id=running,
                                           source=Source(component="runner"),
                                           payload=WorkloadRunning(node_id=doomed, image_digest=DIGEST)))
    survivor = unique("snp-survivor")
    await start_node(survivor, "snp", "--total", "10")
    proc.send_signal(signal.SIGKILL)
    await wait_nodes(js, lambda ns: doomed not in {n.node_id for n in ns})
    moved = await events_of(js, waiting, EventType.SCHEDULED, count=2)
    assert len(moved) == 2
    again = placed(moved[1])
    assert again.node_id == survivor and again.replaces_node == doomed and again.attempt == 2
    assert moved[1].causation_id == moved[0].id
    # running work is not moved: it died with its node, which the trail now says (after the grace period)
    [lost] = await events_of(js, running, EventType.FAILED, timeout=LOST_GRACE_S + 30)
    assert isinstance(lost.payload, Failed) and lost.payload.reason.code == "runner.node.lost"
    assert doomed in lost.payload.reason.message and lost.source.component == "schedule"
    await asyncio.sleep(1.0)
    assert len(await events_of(js, running, EventType.SCHEDULED, timeout=0)) == 1
    assert len(await events_of(js, running, EventType.FAILED, timeout=0)) == 1  # declared lost once
    assert len(await events_of(js, waiting, EventType.SCHEDULED, timeout=0)) == 2  # rescheduled exactly once
    assert not await events_of(js, waiting, EventType.FAILED, timeout=0)


async def test_schedule_step_writes_the_pod_manifest_when_asked(
    nats_server: Any, js: JetStreamContext, start_node: StartNode, tmp_path: Path
) -> None:
    tdx = unique("tdx-k8s")
    await start_node(tdx, "tdx", "--total", "10")
    settings = load_settings(nats_url=nats_server.url, max_deliver=3, ack_wait_s=5.0, retry_attempts=2,
                             k8s_manifest_dir=tmp_path / "k8s", kbs_url="https://kbs.example:8080")
    eps = Endpoints(nats_url=nats_server.url)
    specs = [s for s in deploy_stages(settings, eps) if s.name == "schedule"]
    wl = unique("w")
    async with run_stages(nats_server.url, settings, specs, instance="k8s"):
        await submit(js, wl, {"types": ["tdx"], "allow_emulated": False})
        got = await events_of(js, wl, EventType.SCHEDULED)
        # the manifest is written after the `scheduled` event is stored: allow a loaded machine 30 s
        for _ in range(300):
            if (tmp_path / "k8s" / f"{wl}.json").exists():
                break
            await asyncio.sleep(0.1)
    assert placed(got[0]).node_id == tdx
    pod = json.loads((tmp_path / "k8s" / f"{wl}.json").read_text())
    kubernetes_validate.validate(pod, "1.37.0", strict=True)
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-tdx"
    assert pod["spec"]["containers"][0]["image"] == f"r:5000/ccpipe/hello@{DIGEST}"


async def test_two_schedulers_racing_for_the_last_slot_place_only_one(
    nats_server: Any, js: JetStreamContext, start_node: StartNode
) -> None:
    # a TEE type no other test's node has (sgx, used before, is refused in specs now)
    one_slot = unique("sample-1slot")
    await start_node(one_slot, "sample", "--total", "1")
    settings = load_settings(nats_url=nats_server.url)
    eps = Endpoints(nats_url=nats_server.url)
    replicas = [next(s for s in deploy_stages(settings, eps) if s.name == "schedule") for _ in range(2)]
    spec = WorkloadSpec.model_validate({"workload": {"name": "hello"}, "tee": {"types": ["sample"]}})
    pushed = []
    for _ in replicas:
        wl = unique("w")
        await genuine_publisher(js).publish(Event(
            type=EventType.SUBMITTED, workload_id=wl, source=Source(component="test"),
            payload=Submitted(repo="/r", ref="refs/heads/main", old_commit="0" * 40, new_commit="1" * 40,
                              pusher="t", spec=spec)))
        pushed.append(Event(type=EventType.PUSHED, workload_id=wl, source=Source(component="test"),
                            payload=Pushed(registry="r:5000", repository="ccpipe/hello", image_digest=DIGEST,
                                           reference=f"docker://r:5000/ccpipe/hello@{DIGEST}")))
    for replica in replicas:  # what run_stages does: the handler reads over the stage's connection
        assert replica.bus is not None
        replica.bus.bind(js)
    # two replicas, each with its own view of the trail, decide at the same time
    results = await asyncio.gather(*(r.handler(e) for r, e in zip(replicas, pushed, strict=True)))
    payloads = [out[0].payload for out in results]
    assert sorted(type(p).__name__ for p in payloads) == ["Scheduled", "SchedulingPending"]
    loser = next(p for p in payloads if isinstance(p, SchedulingPending))
    assert f"{one_slot}: no free capacity" in loser.reason
