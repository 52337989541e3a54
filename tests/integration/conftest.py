"""Real servers for integration tests: one nats-server (and one registry) per test session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.bus import connect, provision_stream
from ccpipe.pipeline.enrolment import init_admin
from ccpipe.pipeline.nats_auth import Installation, pipeline_identities
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.config import Settings

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


@dataclass
class Installed:
    """A secured server, the admin's settings and the creds directory."""

    url: str
    admin: Settings
    creds: Path
    root: Path

    def host(self, name: str, identity: str) -> Settings:
        """The settings of a component host: its own data directory, its creds, the admin key pinned."""
        public = (self.admin.data_dir / "keys" / "admin" / "admin.pub").read_text().strip()
        return load_settings(data_dir=self.root / name, nats_creds=self.creds / f"{identity}.creds",
                             admin_key=public)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """An installation as on separate machines: a nats-server with authentication on, the identities
    issued, the bus provisioned by the admin, and the admin key made in the admin's data directory."""
    root = tmp_path_factory.mktemp("enrol")
    admin = load_settings(data_dir=root / "admin", nats_creds_dir=root / "creds")
    keys = Installation(root / "nats-keys")
    for identity in pipeline_identities(("n1",)):
        keys.issue(identity, root / "creds")
    server = EmbeddedNats(root / "nats", auth=keys.server_config()).start()
    try:
        asyncio.run(provision_as_admin(admin, server.url, enrol_local=False))
        init_admin(admin.data_dir)
        yield Installed(server.url, admin, root / "creds", root)
    finally:
        server.stop()
