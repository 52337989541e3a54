"""Crash test: SIGKILL the audit log process mid-stream; after a restart the log and index equal
a fresh rebuild from the stream — nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.bus import EVENTS_STREAM, connect, provision_stream
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas.envelope import Event
from tests.audit_journeys import Signers, signed_messages

pytestmark = pytest.mark.integration

WORKLOADS = 2000  # 20,000 events


async def publish_all(url: str, signers: Signers) -> int:
    nc = await connect(url, name="crash-fill")
    js = nc.jetstream()
    await provision_stream(js)
    msgs = list(signed_messages(signers, 0, WORKLOADS))
    last = 0
    for i in range(0, len(msgs), 500):
        acks = await asyncio.gather(*(
            js.publish(Event.from_wire(data).nats_subject, data, stream=EVENTS_STREAM, headers={SIGNATURE_HEADER: sig})
            for data, sig in msgs[i:i + 500]))
        last = max(last, *(a.seq for a in acks))
    await nc.close()
    return last


async def stream_messages(url: str) -> list[StreamMessage]:
    nc = await connect(url, name="crash-read")
    stored = await read_events(nc.jetstream())
    await nc.close()
    return [StreamMessage(s.seq, s.data, s.headers.get(SIGNATURE_HEADER)) for s in stored]


def last_seq(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT last_seq FROM state").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0) if row else 0


def serve(data_dir: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CCPIPE_DATA_DIR": str(data_dir), "CCPIPE_NATS_URL": url}
    return subprocess.Popen([sys.executable, "-m", "ccpipe", "audit", "serve", "--batch", "400"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_until(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.005)
    raise AssertionError("timed out")


def test_sigkill_mid_stream_then_restart_equals_a_fresh_rebuild(tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats").start()
    try:
        data_dir = tmp_path / "data"
        signers = Signers()
        signers.keyring.save(keyring_path(data_dir))
        total = asyncio.run(publish_all(nats.url, signers))
        db = data_dir / "audit" / "index.sqlite"

        proc = serve(data_dir, nats.url)
        wait_until(lambda: last_seq(db) >= 2000, 60)
        pool = children_of(proc.pid)  # its ingest worker processes
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = last_seq(db)
        assert 0 < at_kill < total, "the kill must land while the stream is being logged"
        assert pool, "the log service prepares batches in worker processes"
        wait_until(lambda: not any(running(pid) for pid in pool), 30)  # they do not outlive it

        proc = serve(data_dir, nats.url)
        try:
            wait_until(lambda: last_seq(db) == total, 120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""

        with SqliteAudit(tmp_path / "rebuilt.sqlite") as fresh, SqliteAudit(db) as resumed:
            Ingestor(fresh, KeyringFile(keyring_path(data_dir))).ingest(asyncio.run(stream_messages(nats.url)))
            assert (resumed.size(), resumed.root(), resumed.last_stream_seq()) == (
                fresh.size(), fresh.root(), fresh.last_stream_seq()) == (total, fresh.root(), total)
            assert resumed.index.dump() == fresh.index.dump()
            assert list(resumed.leaves()) == list(fresh.leaves())
            cps = resumed.checkpoints()
            assert cps and cps[-1].size == total and cps[-1].root == fresh.root()
    finally:
        nats.stop()
