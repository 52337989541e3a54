"""The node agent on a real nats-server: announces itself, launches only what is scheduled on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.agent import run_node_agent
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Scheduled
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.service import serve_kbs
from ccpipe.stages.deploy.inventory_kv import list_nodes
from tests.integration.enclave_runner.runner_launch_helpers import (
    busybox_layer,
    prepare_workload,
    publish,
    trail,
    types,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def env(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, tmp_path: Path, js: JetStreamContext
) -> AsyncIterator[tuple[Settings, Endpoints]]:
    """Settings on a private data dir, and the endpoints with a running embedded KBS."""
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url, registry=registry_server.address,
                        allow_emulated=True, ack_wait_s=5.0)
    eps = Endpoints(nats_url=nats_server.url, registry=registry_server.address)
    async with serve_kbs(settings, eps) as running:
        yield settings, running


async def wait_for(js: JetStreamContext, workload_id: str, etype: EventType, timeout: float = 60.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        order = types(await trail(js, workload_id))
        if etype.value in order or "failed" in order or asyncio.get_running_loop().time() > deadline:
            return order
        await asyncio.sleep(0.2)


async def test_runner_agent_launches_its_workloads_only(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str
) -> None:
    settings, eps = env
    node = RunnerNode("agent-node-1", capacity=1)
    mine = await prepare_workload(js, settings, eps, workload_id, tmp_path / "a", [busybox_layer("echo mine\n")],
                                  node_id=node.node_id, publish_scheduled=True)
    other = await prepare_workload(js, settings, eps, workload_id + "-o", tmp_path / "b",
                                   [busybox_layer("echo other\n")], node_id="someone-else", publish_scheduled=True)
    async with run_node_agent(settings, eps, node) as agent:
        nodes = {n.node_id: n for n in await list_nodes(js)}
        assert nodes[node.node_id].tee.value == "snp" and nodes[node.node_id].emulated
        order = await wait_for(js, mine.workload_id, EventType.WORKLOAD_EXITED)
        assert order[-1] == "workload.exited", order
        assert order.count("enclave.launched") == 1
        # the other node's workload was seen by this node's stage and left alone
        assert types(await trail(js, other.workload_id)) == ["signed", "pushed", "scheduled"]
        # the report is kept once the launch has cleaned up, which may be just after `exited` is published
        for _ in range(100):
            if agent.reports:
                break
            await asyncio.sleep(0.05)
        assert len(agent.reports) == 1 and agent.reports[0].result is not None
        assert agent.reports[0].result.log == b"mine\n"
        # a redelivered scheduled event is not launched twice
        assert await agent.on_scheduled(mine.scheduled) == []
        await asyncio.sleep(0.5)
        assert types(await trail(js, mine.workload_id)).count("enclave.launched") == 1
    assert node.node_id not in {n.node_id for n in await list_nodes(js)}  # withdrawn on exit


async def test_runner_agent_does_not_launch_a_placement_that_was_rescheduled(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str
) -> None:
    settings, eps = env
    node = RunnerNode("agent-node-2", capacity=1)
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path / "a", [busybox_layer("echo late\n")],
                                node_id=node.node_id, publish_scheduled=True)
    # This node missed its heartbeats and the scheduler moved the workload elsewhere.
    moved = Event(type=EventType.SCHEDULED, workload_id=wl.workload_id, source=Source(component="schedule"),
                  causation_id=wl.scheduled.id,
                  payload=Scheduled(node_id="another-node", tee=TeeType.SNP, backend="emulated", attempt=2,
                                    replaces_node=node.node_id))
    await publish(js, settings, moved)
    async with run_node_agent(settings, eps, node) as agent:
        assert await agent.on_scheduled(wl.scheduled) == []
        await asyncio.sleep(1.0)
        assert "enclave.launched" not in types(await trail(js, wl.workload_id))
        assert not agent.reports and not agent.tasks
