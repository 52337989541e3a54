"""Least privilege on the bus, against a real nats-server: each attack of issue 19 fails.

The server is set up as ``ccpipe up`` sets it up: authentication on, one identity per
component issued into a creds directory, the stream and the buckets provisioned by the admin
identity. Then every test connects as one identity and tries what that identity must not do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import NotFoundError

from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.bus import EVENTS_STREAM, connect, connect_as, events_stream_config
from ccpipe.pipeline.nats_auth import (
    ADMIN,
    OBSERVER,
    Installation,
    creds_for,
    pipeline_identities,
    runner_identity,
)
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.errors import ConfigurationError, TransientError
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.nats_service import QUEUE
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import announce, list_nodes

pytestmark = pytest.mark.integration

NODES = ("n1", "n2")
REFUSED_WITHIN_S = 0.5
"""A refused request is never answered; this long without an answer counts as refused."""
PIPELINE_IDENTITIES = [i for i in pipeline_identities(NODES) if i != ADMIN]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedNats, Settings]]:
    """A nats-server with authentication on, the identities issued and the bus provisioned."""
    root = tmp_path_factory.mktemp("auth")
    settings = load_settings(data_dir=root / "data", nats_creds_dir=root / "creds")
    installation = Installation(root / "keys")
    for identity in pipeline_identities(NODES):
        installation.issue(identity, root / "creds")
    server = EmbeddedNats(root / "nats", auth=installation.server_config()).start()

    async def provision() -> None:
        await provision_as_admin(settings, server.url)
        # one event in the trail (the admin may provision but emits nothing)
        nc = await connect_as(settings, server.url, Component.BUILD)
        try:
            await nc.jetstream().publish("ccpipe.evt.wl-seed.built", b"{}", stream=EVENTS_STREAM)
        finally:
            await nc.close()

    try:
        asyncio.run(provision())
        yield server, settings
    finally:
        server.stop()


@pytest.fixture
def url(secured: tuple[EmbeddedNats, Settings]) -> str:
    """The secured server's URL."""
    return secured[0].url


@pytest.fixture
def settings(secured: tuple[EmbeddedNats, Settings]) -> Settings:
    """Settings whose creds directory holds every identity."""
    return secured[1]


@pytest.fixture
async def admin(url: str, settings: Settings) -> AsyncIterator[NatsClient]:
    """The provisioner's connection (to look at what the attacks left)."""
    nc = await connect_as(settings, url, ADMIN)
    yield nc
    await nc.close()


async def _stored_count(nc: NatsClient, stream: str = EVENTS_STREAM) -> int:
    return (await nc.jetstream().stream_info(stream)).state.messages


def _violations(nc: NatsClient) -> str:
    return str(nc.last_error or "").lower()


async def _violation_reported(nc: NatsClient, what: str, within_s: float = 5.0) -> bool:
    """Whether the server reports ``what`` to ``nc`` (its -ERR arrives after the refused operation)."""
    await nc.flush()
    for _ in range(int(within_s / 0.02)):
        if what in _violations(nc):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_client_without_credentials_cannot_connect(url: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        await connect(url, name="anonymous", identity="anonymous", timeout=2)
    assert err.value.code == "bus.auth.refused"
    assert "refused anonymous: it presented no credentials" in err.value.message


async def test_credentials_of_another_installation_are_refused(url: str, tmp_path: Path) -> None:
    stranger = Installation(tmp_path / "other").issue(Component.BUILD, tmp_path / "creds")
    with pytest.raises(ConfigurationError) as err:
        await connect(url, name="build", creds=str(stranger), identity=Component.BUILD, timeout=2)
    assert str(stranger) in err.value.message and "build" in err.value.message


def test_a_missing_creds_file_is_named_with_its_component(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sign.creds"
    with pytest.raises(ConfigurationError) as err:
        creds_for(load_settings(data_dir=tmp_path, nats_creds=missing), Component.SIGN)
    assert str(missing) in err.value.message and "of sign" in err.value.message


async def test_the_build_credential_cannot_publish_a_key_release(url: str, settings: Settings,
                                                                 admin: NatsClient) -> None:
    before = await _stored_count(admin)
    nc = await connect_as(settings, url, Component.BUILD)
    try:
        js = nc.jetstream()
        with pytest.raises((NatsError, TimeoutError)):
            await js.publish("ccpipe.evt.wl-1.key.released", b"{}", stream=EVENTS_STREAM, timeout=REFUSED_WITHIN_S)
        assert await _violation_reported(nc, 'permissions violation for publish to "ccpipe.evt.wl-1.key.released"')
        # its own event type is stored (the credential works; only the forgery is refused)
        await js.publish("ccpipe.evt.wl-1.built", b"{}", stream=EVENTS_STREAM, timeout=5)
    finally:
        await nc.close()
    with pytest.raises(NotFoundError):
        await admin.jetstream().get_last_msg(EVENTS_STREAM, "ccpipe.evt.wl-1.key.released")
    assert await _stored_count(admin) == before + 1


def _heartbeat(node_id: str) -> NodeAnnouncement:
    return NodeAnnouncement(node_id=node_id, tee=TeeType.SNP, backend="emulated", emulated=True,
                            capacity=Capacity(total=1, free=1))


async def test_a_runner_cannot_write_another_nodes_heartbeat(url: str, settings: Settings) -> None:
    nc = await connect_as(settings, url, runner_identity("n1"))
    try:
        js = nc.jetstream(timeout=REFUSED_WITHIN_S)
        for other in ("n2", "ghost"):
            with pytest.raises(TransientError):
                await announce(js, _heartbeat(other), ttl=20, sign=Ed25519PrivateKey.generate().sign)
            assert await _violation_reported(nc, f'permissions violation for publish to "$kv.ccpipe_nodes.{other}"')
        await announce(js, _heartbeat("n1"), ttl=20, sign=Ed25519PrivateKey.generate().sign)  # its own key
    finally:
        await nc.close()
    observer = await connect_as(settings, url, OBSERVER)
    try:
        assert [n.node_id for n in await list_nodes(observer.jetstream())] == ["n1"]
    finally:
        await observer.close()


async def _refused(request: Awaitable[object]) -> bool:
    try:
        await request
    except (NatsError, TimeoutError):
        return True
    return False


@pytest.mark.parametrize("identity", PIPELINE_IDENTITIES)
async def test_no_pipeline_credential_can_delete_purge_or_reconfigure_the_trail_or_a_bucket(
    identity: str, url: str, settings: Settings, admin: NatsClient
) -> None:
    before = await _stored_count(admin)
    nc = await connect_as(settings, url, identity)
    try:
        js = nc.jetstream(timeout=REFUSED_WITHIN_S)
        shrunk = events_stream_config()
        shrunk.max_msgs = 5
        attempts = {
            "stream delete": js.delete_stream(EVENTS_STREAM),
            "stream purge": js.purge_stream(EVENTS_STREAM),
            "message delete": js.delete_msg(EVENTS_STREAM, 1),
            "stream update": js.update_stream(shrunk),
            "bucket delete": js.delete_key_value("CCPIPE_KBS_RESOURCES"),
            "bucket create": js.create_key_value(KeyValueConfig(bucket="CCPIPE_GHOST", storage=StorageType.MEMORY)),
            "nodes bucket purge": js.purge_stream("KV_CCPIPE_NODES"),
        }
        refused = dict(zip(attempts, await asyncio.gather(*map(_refused, attempts.values())), strict=True))
        assert refused == dict.fromkeys(attempts, True)
    finally:
        await nc.close()
    info = await admin.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.messages >= before and info.config.max_msgs in (None, -1)
    await admin.jetstream().key_value("CCPIPE_KBS_RESOURCES")  # still there
    with pytest.raises(NotFoundError):
        await admin.jetstream().stream_info("KV_CCPIPE_GHOST")


async def test_only_the_kbs_may_serve_its_rcar_subjects(url: str, settings: Settings) -> None:
    runner = await connect_as(settings, url, runner_identity("n1"))
    impostors = [await connect_as(settings, url, i) for i in PIPELINE_IDENTITIES if i != Component.KBS]
    kbs = await connect_as(settings, url, Component.KBS)
    try:
        for nc in impostors:
            await nc.subscribe("ccpipe.kbs.attest", queue=QUEUE, cb=_answer(nc, b"forged"))
            assert await _violation_reported(nc, 'permissions violation for subscription to "ccpipe.kbs.attest"')
        with pytest.raises((NoRespondersError, TimeoutError)):
            await runner.request("ccpipe.kbs.attest", b"{}", timeout=REFUSED_WITHIN_S)
        # nor can one slip an answer into the runner's inbox (only the KBS may reply to requests)
        await impostors[0].publish(f"_INBOX.{runner_identity('n1')}.forged", b"forged")
        assert await _violation_reported(
            impostors[0], f'permissions violation for publish to "_inbox.{runner_identity("n1")}.forged"')
        # the real KBS may (positive control): the runner's request is answered by it alone
        await kbs.subscribe("ccpipe.kbs.attest", queue=QUEUE, cb=_answer(kbs, b"kbs"))
        await kbs.flush()
        replies = {await _answered(runner, "ccpipe.kbs.attest") for _ in range(5)}
        assert replies == {b"kbs"}
    finally:
        for nc in (runner, kbs, *impostors):
            await nc.close()


async def _answered(nc: NatsClient, subject: str, within_s: float = 5.0) -> bytes:
    """The answer to a request on ``subject``, waiting out "no responders" while a new queue
    subscription becomes visible to the requester (seen once in CI, under load, right after
    the responder's flush)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return (await nc.request(subject, b"{}", timeout=within_s)).data
        except NoRespondersError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _answer(nc: NatsClient, body: bytes) -> Callable[[Msg], Awaitable[None]]:
    async def cb(msg: Msg) -> None:
        await nc.publish(msg.reply, body)

    return cb


async def test_a_non_kbs_credential_cannot_read_or_write_the_kbs_buckets(url: str, settings: Settings) -> None:
    nc = await connect_as(settings, url, Component.SIGN)
    try:
        js = nc.jetstream(timeout=REFUSED_WITHIN_S)
        assert await _refused(js.key_value("CCPIPE_KBS_RESOURCES"))
        assert await _refused(js.publish("$KV.CCPIPE_KBS_NONCES.s1", b"", timeout=REFUSED_WITHIN_S))
    finally:
        await nc.close()



async def test_a_runner_cannot_record_its_own_attestation_nor_answer_joins(
    url: str, settings: Settings, admin: NatsClient
) -> None:
    nc = await connect_as(settings, url, runner_identity("n1"))
    kbs = await connect_as(settings, url, Component.KBS)
    try:
        js = nc.jetstream(timeout=REFUSED_WITHIN_S)
        # a node that could write its own record would choose the TEE type and key it is placed by
        assert await _refused(js.publish("$KV.CCPIPE_NODE_ATTESTATIONS.n1", b"{}", timeout=REFUSED_WITHIN_S))
        for subject in ("ccpipe.nodes.challenge", "ccpipe.nodes.join.kbs-1"):
            await nc.subscribe(subject, cb=_answer(nc, b"forged"))
            assert await _violation_reported(nc, f'permissions violation for subscription to "{subject}"')
        # the attestation service (KBS credential) may serve joins and record them (positive control)
        await kbs.subscribe("ccpipe.nodes.challenge", cb=_answer(kbs, b"kbs"))
        await kbs.flush()
        assert (await nc.request("ccpipe.nodes.challenge", b"", timeout=5)).data == b"kbs"
        await kbs.jetstream().publish("$KV.CCPIPE_NODE_ATTESTATIONS.n2", b"{}", timeout=5)
    finally:
        await nc.close()
        await kbs.close()
    with pytest.raises(NotFoundError):
        await admin.jetstream().get_last_msg("KV_CCPIPE_NODE_ATTESTATIONS", "$KV.CCPIPE_NODE_ATTESTATIONS.n1")
