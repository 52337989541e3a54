"""Real servers for integration tests: one nats-server (and one registry) per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server >= 2.10 with JetStream on loopback."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRegistry]:
    """A real docker-registry on loopback."""
    reg = EmbeddedRegistry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """A connection to the session's server, with the events stream provisioned."""
    client = await connect(nats_server.url, name="ccpipe-tests")
    await provision_stream(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def js(nc: NatsClient) -> JetStreamContext:
    """JetStream context of :func:`nc`."""
    return nc.jetstream()


def repo_root() -> Path:
    """The checkout's root."""
    return Path(__file__).resolve().parents[2]
