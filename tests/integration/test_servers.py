"""Embedded servers, the version floor and the stream contract, against real servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from ccpipe.pipeline.bus import EVENTS_STREAM, connect, events_stream_config, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats, parse_version
from ccpipe.schemas.errors import ConfigurationError

pytestmark = pytest.mark.integration
OLD_NATS = Path("/opt/ccpipe/nats-server-2.9/usr/sbin/nats-server")  # Debian 12's own, see install script


def test_old_nats_server_binary_is_refused_with_a_way_out(tmp_path: Path) -> None:
    assert OLD_NATS.exists(), "scripts/install-system-deps.sh keeps Debian 12's 2.9 server here for this test"
    with pytest.raises(ConfigurationError, match=r"nats-server 2\.9\.10, but ccpipe needs 2\.10\.0") as err:
        EmbeddedNats(tmp_path, binary=str(OLD_NATS)).start()
    assert "install-system-deps.sh" in err.value.hint


async def test_old_server_behind_a_url_is_refused(tmp_path: Path) -> None:
    # Start the old server ourselves, bypassing the binary check, and connect by URL.
    import subprocess

    from ccpipe.pipeline.servers import free_port

    port = free_port()
    proc = subprocess.Popen([str(OLD_NATS), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import asyncio
        for _ in range(50):
            try:
                with pytest.raises(ConfigurationError, match=r"2\.9\.10.*needs 2\.10"):
                    await connect(f"nats://127.0.0.1:{port}", name="t")
                break
            except AssertionError:
                raise
            except Exception:
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(5)


async def test_stream_is_created_once_and_checked(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path).start()
    try:
        nc = await connect(server.url, name="t")
        js = nc.jetstream()
        cfg = await provision_stream(js)
        assert cfg.deny_delete and cfg.deny_purge and cfg.subjects == ["ccpipe.evt.>"]
        assert await provision_stream(js)  # idempotent
        await nc.close()
    finally:
        server.stop()


async def test_a_stream_with_other_settings_is_refused_naming_the_field(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path).start()
    try:
        nc = await connect(server.url, name="t")
        js = nc.jetstream()
        want = events_stream_config()
        await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=want.subjects, storage=want.storage,
                                         deny_delete=True, deny_purge=False))
        with pytest.raises(ConfigurationError, match="'deny_purge' is False on the server"):
            await provision_stream(js)
        info = await js.stream_info(EVENTS_STREAM)
        assert info.config.deny_purge is False, "ccpipe must never rewrite an existing stream"
        await nc.close()
    finally:
        server.stop()


def test_state_survives_a_restart(tmp_path: Path) -> None:
    import asyncio

    from ccpipe.pipeline.bus import EventPublisher
    from ccpipe.pipeline.reader import read_events
    from ccpipe.schemas.envelope import Event, Source
    from ccpipe.schemas.events import EventType, WorkloadRunning

    async def publish(url: str) -> str:
        nc = await connect(url, name="t")
        await provision_stream(nc.jetstream())
        e = Event(type=EventType.WORKLOAD_RUNNING, workload_id="w-1", source=Source(component="t"),
                  payload=WorkloadRunning(node_id="n", image_digest="sha256:" + "1" * 64))
        await EventPublisher(nc.jetstream()).publish(e)
        await nc.close()
        return e.id

    async def read(url: str) -> list[str]:
        nc = await connect(url, name="t")
        out = [s.event.id for s in await read_events(nc.jetstream()) if s.event]
        await nc.close()
        return out

    s1 = EmbeddedNats(tmp_path).start()
    eid = asyncio.run(publish(s1.url))
    s1.stop()
    s2 = EmbeddedNats(tmp_path).start()
    try:
        assert asyncio.run(read(s2.url)) == [eid]
    finally:
        s2.stop()


def test_parse_version() -> None:
    assert parse_version("nats-server: v2.15.1") == (2, 15, 1)
    with pytest.raises(ValueError):
        parse_version("garbage")
