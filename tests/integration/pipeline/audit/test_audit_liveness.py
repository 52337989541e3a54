"""The live audit log never stops silently: failures are retried and reported, a forged store is
refused, a changed stream is named, and a second process stands by (real nats-server)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.audit.lease import LEASE_KEY, lease_bucket
from ccpipe.pipeline.audit.liveness import AuditState, AuditStatus, StoreMismatch, read_status, status_path
from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.pipeline.audit.service import AUDIT_STREAM, CHECKPOINT_SUBJECT, AuditLogService, running_audit_log
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher, connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from tests.audit_journeys import journey

pytestmark = pytest.mark.integration


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def own_js(own_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await connect(own_nats.url, name="liveness-tests")
    js = nc.jetstream()
    await provision_stream(js)
    yield js
    await nc.close()


def settings_for(tmp_path: Path, url: str) -> Settings:
    return load_settings(data_dir=tmp_path / "data", nats_url=url)


async def publish(js: JetStreamContext, settings: Settings, first: int, count: int) -> int:
    pub = EventPublisher(js, signer=event_signer(settings.data_dir))
    last = 0
    for n in range(first, first + count):
        for e in journey(n):
            last = (await pub.publish(e)).seq
    return last


async def until(check: object, timeout: float, what: str) -> None:
    """Poll ``check()`` (sync or async) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def checkpoint_count(js: JetStreamContext) -> int:
    info = await js.stream_info(AUDIT_STREAM, subjects_filter=CHECKPOINT_SUBJECT)
    return (info.state.subjects or {}).get(CHECKPOINT_SUBJECT, 0)


async def test_a_forged_tail_leaf_is_refused_at_restart_and_never_signed(
        tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats.url)
    async with running_audit_log(settings, own_nats.url) as svc:
        await svc.wait_logged(await publish(own_js, settings, 0, 2))
    signed = await checkpoint_count(own_js)
    # Whoever holds the database rewrites who got a key, consistently (bytes and leaf hash).
    db = sqlite3.connect(settings.data_dir / "audit" / "index.sqlite")
    (data,) = db.execute("SELECT data FROM leaves WHERE idx = 16").fetchone()
    forged = bytes(data).replace(b"node-", b"evil-")
    assert forged != data
    db.execute("UPDATE leaves SET data = ?, leaf_hash = ? WHERE idx = 16", (forged, leaf_hash(forged)))
    db.commit()
    db.close()
    with pytest.raises(StoreMismatch) as refused:
        async with running_audit_log(settings, own_nats.url):
            pass
    assert "leaf 16 (stream sequence 17) differs from the stream's message" in refused.value.message
    assert await checkpoint_count(own_js) == signed
    status = read_status(status_path(settings.data_dir))
    assert status.state is AuditState.REFUSED and not status.ready and "leaf 16" in status.reason


async def test_a_failing_bus_is_retried_reported_and_recovered_without_loss(tmp_path: Path) -> None:
    # A nats-server on a fixed port, killed and restarted on the same store: the client reconnects.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store_dir = tmp_path / "js"

    def server() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    url = f"nats://127.0.0.1:{port}"
    proc = server()
    try:
        settings = settings_for(tmp_path, url)
        nc = await connect(url, name="liveness-tests")
        js = nc.jetstream()
        await provision_stream(js)
        async with running_audit_log(settings, url, status_interval_s=0.2) as svc:
            first = await publish(js, settings, 0, 2)
            await svc.wait_logged(first)
            await until(lambda: read_status(status_path(settings.data_dir)).ready, 5, "ready")
            proc.kill()
            proc.wait()
            await until(lambda: svc.status.state is AuditState.DEGRADED, 10, "degraded while NATS is down")
            status = read_status(status_path(settings.data_dir))
            assert not status.ready and status.reason
            proc = server()
            await until(lambda: svc.status.state is AuditState.LEADING, 30, "recovered when NATS is back")
            last = await publish(js, settings, 2, 2)
            await svc.wait_logged(last, timeout=20)
            await until(lambda: read_status(status_path(settings.data_dir)).lag == 0, 5, "no lag")
        await nc.close()
    finally:
        proc.kill()
        proc.wait()
    with SqliteAudit(settings.data_dir / "audit" / "index.sqlite") as store:
        assert [leaf.stream_seq for leaf in store.leaves()] == list(range(1, last + 1))


async def test_a_re_created_stream_is_named_while_running_and_at_restart(
        tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats.url)
    async with running_audit_log(settings, own_nats.url, status_interval_s=0.2) as svc:
        await svc.wait_logged(await publish(own_js, settings, 0, 1))
        await own_js.delete_stream(EVENTS_STREAM)
        await until(lambda: "missing" in svc.status.reason, 5, "a missing stream named")
        await provision_stream(own_js)
        await publish(own_js, settings, 1, 1)  # key releases on the new stream
        await until(lambda: "re-created" in svc.status.reason, 5, "a re-created stream named")
        assert svc.status.state is AuditState.DEGRADED
        assert not read_status(status_path(settings.data_dir)).ready
    async with running_audit_log(settings, own_nats.url) as svc:
        assert svc.status.state is AuditState.DEGRADED and "was re-created at" in svc.status.reason


SERVE = """
import asyncio, sys
from pathlib import Path
from ccpipe.pipeline.audit.service import running_audit_log
from ccpipe.pipeline.settings import load_settings

async def main() -> None:
    settings = load_settings(data_dir=Path(sys.argv[1]), nats_url=sys.argv[2])
    async with running_audit_log(settings, sys.argv[2], status_interval_s=0.2, workers=0):
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_second_process_stands_by_and_takes_over_within_the_lease_ttl(
        tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext) -> None:
    ttl = 2.0
    kv = await lease_bucket(own_js, ttl)
    settings = settings_for(tmp_path, own_nats.url)
    path = status_path(settings.data_dir)

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SERVE, str(settings.data_dir), own_nats.url],
                                env=os.environ.copy())

    def shown() -> AuditStatus:
        return read_status(path)

    a = spawn()
    b: subprocess.Popen[bytes] | None = None
    try:
        await until(lambda: shown().ready and shown().holder.split(":")[1] == str(a.pid), 30, "A leads")
        b = spawn()
        first = await publish(own_js, settings, 0, 3)
        await until(lambda: shown().logged_seq == first, 20, "A logged the first events")
        await asyncio.sleep(1.5)  # B is up by now, and stands by
        holder = (await kv.get(LEASE_KEY)).value or b""
        assert holder.decode().split(":")[1] == str(a.pid)
        a.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.wait()
        last = await publish(own_js, settings, 3, 3)  # while nobody writes
        b_pid = b.pid
        await until(lambda: shown().ready and shown().holder.split(":")[1] == str(b_pid), ttl + 5, "B leads")
        assert time.monotonic() - killed < ttl + 1.5  # the TTL, one standby poll and the status tick
        await until(lambda: shown().logged_seq == last, 20, "B logged what A left")
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
    with SqliteAudit(settings.data_dir / "audit" / "index.sqlite") as store:
        assert [leaf.stream_seq for leaf in store.leaves()] == list(range(1, last + 1))  # none lost, none twice


async def test_a_standby_in_process_writes_nothing(tmp_path: Path, own_nats: EmbeddedNats,
                                                   own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats.url)
    async with running_audit_log(settings, own_nats.url) as leader:
        standby = AuditLogService(settings, own_nats.url, workers=0)
        await standby.start()
        try:
            last = await publish(own_js, settings, 0, 2)
            await leader.wait_logged(last)
            await until(lambda: standby.status.state is AuditState.STANDBY, 5, "standing by")
            assert standby.stats["logged"] == 0 and standby.stats["checkpoints"] == 0
            assert leader.holder in standby.status.reason
            assert read_status(status_path(settings.data_dir)).holder == leader.holder
        finally:
            await standby.stop()
