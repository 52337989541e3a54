"""Fixtures of the registry client's integration tests (the real registry comes from tests/integration)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from node_helpers import StartNode, spawn_node, wait_ready

from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.stages.deploy.registry import RegistryClient, RetryPolicy


@pytest.fixture
def repo() -> str:
    """A fresh repository name, so tests can share the session's registry."""
    return f"ccpipe-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(registry_server: EmbeddedRegistry) -> AsyncIterator[RegistryClient]:
    """A plain-HTTP client of the session's docker-registry, with quick retries."""
    async with RegistryClient(
        registry_server.address, plain_http=True, retry=RetryPolicy(attempts=4, initial_wait=0.05, max_wait=0.5)
    ) as c:
        yield c


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
