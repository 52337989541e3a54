"""Fixtures of the deploy stage's integration tests (NATS and the registry servers come from tests/integration)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ccpipe.pipeline.servers import EmbeddedNats
from tests.integration.stages.deploy.node_helpers import StartNode, spawn_node, wait_ready


@pytest.fixture
def start_node(nats_server: EmbeddedNats) -> Iterator[StartNode]:
    """``await start_node(node_id, tee, *flags)``: a runner-like node process, announced once this
    returns (see node_process.py); killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    async def start(node_id: str, tee: str, *flags: str) -> subprocess.Popen[str]:
        proc = spawn_node(nats_server.url, node_id, tee, *flags)
        procs.append(proc)
        await wait_ready(proc, node_id)
        return proc

    yield start
    for proc in procs:  # a clean stop withdraws the node, so the next test does not see it
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
