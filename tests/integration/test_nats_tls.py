"""TLS between components and NATS: the embedded server presents a certificate from a private CA
(made in the test) and clients trust it only through ``CCPIPE_NATS_CA``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.nats_auth import Installation, pipeline_identities
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.errors import ConfigurationError
from tests.private_ca import write_ca_and_server_cert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedNats, Settings]]:
    """An authenticated nats-server that speaks only TLS, and settings that trust its CA."""
    root = tmp_path_factory.mktemp("tls")
    ca, cert, key = write_ca_and_server_cert(root)
    settings = load_settings(data_dir=root / "data", nats_creds_dir=root / "creds", nats_ca=ca)
    installation = Installation(root / "keys")
    for identity in pipeline_identities():
        installation.issue(identity, root / "creds")
    server = EmbeddedNats(root / "nats", auth=installation.server_config(), tls=(cert, key)).start()
    yield server, settings
    server.stop()


async def test_a_client_that_trusts_the_private_ca_connects_over_tls(tls_nats: tuple[EmbeddedNats, Settings]) -> None:
    server, settings = tls_nats
    nc = await connect_as(settings, server.url, Component.BUILD)
    try:
        assert nc.is_connected and nc._server_info.get("tls_required")  # the server offers nothing but TLS
    finally:
        await nc.close()


async def test_a_client_without_the_ca_refuses_the_server(tls_nats: tuple[EmbeddedNats, Settings]) -> None:
    server, settings = tls_nats
    untrusting = settings.model_copy(update={"nats_ca": None})
    with pytest.raises(ConfigurationError) as err:
        await connect_as(untrusting, server.url, Component.BUILD)
    assert err.value.code == "bus.tls.failed" and "build" in err.value.message


async def test_another_ca_is_not_trusted(tls_nats: tuple[EmbeddedNats, Settings], tmp_path: Path) -> None:
    server, settings = tls_nats
    other_ca, _, _ = write_ca_and_server_cert(tmp_path)
    with pytest.raises(ConfigurationError) as err:
        await connect_as(settings.model_copy(update={"nats_ca": other_ca}), server.url, Component.BUILD)
    assert err.value.code == "bus.tls.failed"
