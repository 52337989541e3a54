"""Node inventory against a real nats-server: announce, heartbeat, withdraw, expire."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import BUCKET, heartbeat_ttl, list_nodes, node_heartbeat, nodes_bucket
from tests.integration.stages.deploy.node_helpers import StartNode, unique, wait_nodes

pytestmark = pytest.mark.integration
KEY = Ed25519PrivateKey.generate()
"""Signs the heartbeats of these tests (the inventory stores them whether or not a node attested)."""


def announcement(node_id: str, free: int = 2) -> NodeAnnouncement:
    return NodeAnnouncement(node_id=node_id, tee=TeeType.TDX, backend="emulated", emulated=True,
                            tcb={"tdx_module": 5}, capacity=Capacity(total=4, free=free), labels={"zone": "a"})


async def test_heartbeat_announces_updates_and_withdraws_on_clean_exit(js: JetStreamContext) -> None:
    node_id = unique("inv")
    async with node_heartbeat(js, announcement(node_id), sign=KEY.sign, interval=0.2) as beat:
        listed = {n.node_id: n for n in await list_nodes(js)}
        assert listed[node_id].capacity.free == 2 and listed[node_id].labels == {"zone": "a"}
        assert listed[node_id].ttl_s == pytest.approx(1.0) and listed[node_id].heartbeat_at is not None
        await asyncio.sleep(1.5)  # longer than one TTL: only the heartbeats keep it listed
        assert node_id in {n.node_id for n in await list_nodes(js)}
        assert beat.beats >= 4
        await beat.update(announcement(node_id, free=0))
        assert {n.node_id: n for n in await list_nodes(js)}[node_id].capacity.free == 0
    assert node_id not in {n.node_id for n in await list_nodes(js)}


async def test_a_killed_node_drops_out_after_its_ttl(js: JetStreamContext, start_node: StartNode) -> None:
    node_id = unique("dies")
    proc = await start_node(node_id, "snp", "--interval", "0.3")
    assert node_id in {n.node_id for n in await list_nodes(js)}
    proc.send_signal(signal.SIGKILL)  # no clean exit: nothing withdraws the key
    killed = time.monotonic()
    nodes = await wait_nodes(js, lambda ns: node_id not in {n.node_id for n in ns}, timeout=10)
    gone_after = time.monotonic() - killed
    assert node_id not in {n.node_id for n in nodes}
    assert gone_after < 5.0  # TTL = 3 x 0.3 s (min 1 s), far below the bucket's 30 s backstop


async def test_a_terminated_node_withdraws_at_once(js: JetStreamContext, start_node: StartNode) -> None:
    node_id = unique("term")
    proc = await start_node(node_id, "sgx", "--interval", "5")
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 10)
    assert node_id not in {n.node_id for n in await list_nodes(js)}  # without waiting for the 15 s TTL


async def test_bucket_has_ttls_and_refuses_intervals_it_cannot_keep(js: JetStreamContext) -> None:
    kv = await nodes_bucket(js)
    info = await js.stream_info(f"KV_{BUCKET}")
    assert info.config.max_age == pytest.approx(30.0) and info.config.allow_msg_ttl
    assert kv is not None
    with pytest.raises(ConfigurationError, match="too long"):
        heartbeat_ttl(11.0)
    with pytest.raises(ConfigurationError, match="positive"):
        async with node_heartbeat(js, announcement(unique("bad")), sign=KEY.sign, interval=0):
            pass


async def test_a_malformed_entry_does_not_hide_the_others(js: JetStreamContext) -> None:
    kv = await nodes_bucket(js)
    bad = unique("garbage")
    await kv.put(bad, b"{not json")
    good = unique("good")
    async with node_heartbeat(js, announcement(good), sign=KEY.sign, interval=0.5):
        ids = {n.node_id for n in await list_nodes(js)}
    await kv.delete(bad)
    assert good in ids and bad not in ids


async def test_a_node_with_a_skewed_clock_is_judged_by_the_server_time(js: JetStreamContext) -> None:
    await nodes_bucket(js)
    node_id = unique("skewed")
    an_hour_behind = datetime.now(UTC) - timedelta(hours=1)
    stamped = announcement(node_id).model_copy(update={"heartbeat_at": an_hour_behind, "ttl_s": 3.0})
    await js.publish(f"$KV.{BUCKET}.{node_id}", stamped.to_json(), msg_ttl=3.0)
    listed = {n.node_id: n for n in await list_nodes(js)}
    assert node_id in listed  # fresh by the server's clock, whatever the node's says
    seen = listed[node_id].heartbeat_at
    assert seen is not None and seen > an_hour_behind
    await (await nodes_bucket(js)).delete(node_id)


async def test_listing_nodes_leaves_no_consumers_behind(js: JetStreamContext) -> None:
    # A scheduler lists the inventory every round: each listing's consumer must go soon after,
    # or they pile up on the server until it refuses new ones ("maximum consumers limit").
    async with node_heartbeat(js, announcement(unique("listed")), sign=KEY.sign):
        for _ in range(10):
            assert await list_nodes(js)
    deadline = time.monotonic() + 15
    while (left := (await js.stream_info(f"KV_{BUCKET}")).state.consumer_count) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert left == 0


async def test_every_listing_sees_every_live_node(js: JetStreamContext) -> None:
    # nats-py's KV watch, which listings used, sometimes said "no more values" before the values
    # it had been sent arrived: about one listing in a thousand saw no node at all, and the
    # scheduler took live nodes for dead (work moved, or "no nodes are announced").
    ids = {unique("steady-a"), unique("steady-b")}
    async with contextlib.AsyncExitStack() as stack:
        for node_id in ids:
            await stack.enter_async_context(node_heartbeat(js, announcement(node_id), sign=KEY.sign, interval=0.5))
        missed = []
        for i in range(300):
            seen = {n.node_id for n in await list_nodes(js)}
            if not ids <= seen:
                missed.append((i, sorted(seen & ids)))
            await asyncio.sleep(0.01)  # each listing's consumer lingers 2 s: stay below the server's limit
    assert missed == []
