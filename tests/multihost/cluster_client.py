"""The client machine's side of ``test_nats_cluster_netns``: run as ``python -m tests.multihost.cluster_client``.

It creates ccpipe's events stream with three replicas on the cluster, checks it with ccpipe's own
provisioning, then reconnects with the stream leader's node first (so losing that node loses
both the client's server and the stream leader), creates a durable consumer and publishes the
first batch. It writes ``ready.json`` (the leader's name) and waits for the test to write
``go`` after killing a node; then it publishes the second batch, reading every message back
through the consumer, and writes ``result.json``. Files are the channel because the test and
this process share the file system but not the network.

Every message carries a ``Nats-Msg-Id``, so a publish retried after a lost acknowledgement is
stored once: duplicates in the result are a real failure. Like a publish, every JetStream API
request made after the loss (consumer and stream info) is retried for a bounded time: it goes
unanswered, or is refused, while the cluster elects new leaders, as it would for any client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EVENTS_STREAM, connect, events_stream_config, provision_stream
from ccpipe.schemas.envelope import SUBJECT_PREFIX

SUBJECT = f"{SUBJECT_PREFIX}.multihost.probe"
DURABLE = "multihost"
REPLICAS = 3
RETRY_FOR_S = 30.0
"""How long one publish or the read-back keeps retrying while the cluster elects new leaders."""
GO_TIMEOUT_S = 60.0

T = TypeVar("T")


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` so a reader never sees half of it (write, then rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.rename(path)


async def create_stream(servers: str) -> str:
    """Create the R3 events stream, check it as ccpipe would, and return its leader's server name."""
    nc = await connect(servers, name="ccpipe-multihost-admin")
    try:
        js = nc.jetstream()
        await js.add_stream(replace(events_stream_config(), num_replicas=REPLICAS))
        config = await provision_stream(js)  # ccpipe's provisioning accepts the stream it finds
        assert config.num_replicas == REPLICAS, config
        leader = (await js.stream_info(EVENTS_STREAM)).cluster
        assert leader is not None and leader.leader, "the stream has no leader"
        return leader.leader
    finally:
        await nc.close()


async def retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried for up to :data:`RETRY_FOR_S` while it fails with a NATS error or times out.

    A JetStream API request times out (or gets "temporarily unavailable") while the stream or
    consumer it asks about has no leader, i.e. for a while after a node is lost.
    """
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            return await call()
        except (NatsError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{what}: {exc!r}; retrying", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)


async def publish(js: JetStreamContext, numbers: range) -> int:
    """Publish one message per number (retrying each until stored); returns how many attempts failed."""
    failures = 0
    for n in numbers:
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                await js.publish(SUBJECT, str(n).encode(), headers={"Nats-Msg-Id": f"m{n}"}, timeout=2)
                break
            except (NatsError, TimeoutError):
                failures += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    return failures


async def read_back(js: JetStreamContext, want: int) -> list[int]:
    """Every message the durable consumer delivers until ``want`` distinct ones came (duplicates kept)."""
    sub = await retrying("binding the consumer", lambda: js.pull_subscribe(SUBJECT, durable=DURABLE,
                                                                            stream=EVENTS_STREAM))
    got: list[int] = []
    deadline = time.monotonic() + RETRY_FOR_S
    while len(set(got)) < want and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except (NatsError, TimeoutError):
            continue
        for msg in msgs:
            got.append(int(msg.data))
            await msg.ack()
    return got


def server_name(nc: NatsClient) -> str:
    """Name of the server ``nc`` is connected to now."""
    return str(nc._server_info.get("server_name", ""))  # nats-py keeps INFO only here


async def main(args: argparse.Namespace) -> None:
    """Run the client's part (see the module docstring)."""
    nodes: dict[str, str] = dict(item.split("=", 1) for item in args.nodes.split(","))
    leader = await create_stream(",".join(nodes.values()))
    first = [nodes[leader], *(url for name, url in nodes.items() if name != leader)]
    nc = await nats.connect(servers=first, dont_randomize=True, name="ccpipe-multihost-client",
                            max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=5)
    try:
        js = nc.jetstream()
        # the consumer exists (R3, like its stream) before the loss
        await retrying("creating the consumer", lambda: js.pull_subscribe(SUBJECT, durable=DURABLE,
                                                                          stream=EVENTS_STREAM))
        failures = await publish(js, range(args.before))
        write_json(args.out / "ready.json", {"leader": leader, "connected": server_name(nc)})
        go = args.out / "go"
        deadline = time.monotonic() + GO_TIMEOUT_S
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{go} did not appear within {GO_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        failures += await publish(js, range(args.before, args.before + args.after))
        received = await read_back(js, args.before + args.after)
        info = await retrying("stream info", lambda: js.stream_info(EVENTS_STREAM))
        write_json(args.out / "result.json", {
            "received": received, "stream_messages": info.state.messages, "publish_failures": failures,
            "leader_after": info.cluster.leader if info.cluster else None, "connected_after": server_name(nc),
        })
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", required=True, help="name=url,... of every cluster node")
    parser.add_argument("--before", type=int, required=True, help="messages published before the loss")
    parser.add_argument("--after", type=int, required=True, help="messages published after it")
    parser.add_argument("--out", type=Path, required=True, help="directory for ready.json, go and result.json")
    asyncio.run(main(parser.parse_args()))
