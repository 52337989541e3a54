"""The retention service against a real NATS server: an ended workload's image layouts go,
a running one's stay, and the retention settings keep what they say."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Failed, WorkloadExited
from ccpipe.schemas.failure import FailureReason
from ccpipe.stages.sign.retention_service import RetentionLoop, serve_retention
from tests.genuine_events import genuine_publisher

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "ef" * 32


def workload(data: Path) -> str:
    """A new workload id with a plaintext and a signed layout, a receipt and initdata under ``data``."""
    wl = f"ret-{uuid.uuid4().hex[:10]}"
    root = data / "images" / wl
    for kind in ("plain", "signed"):
        (root / kind / "blobs" / "sha256").mkdir(parents=True)
        (root / kind / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"\0" * 4096)
    (root / "signed.json").write_text("{}")
    (root / "initdata.toml").write_text("version = '0.1.0'\n")
    return wl


def layouts(data: Path, wl: str) -> list[str]:
    return sorted(p.name for p in (data / "images" / wl).iterdir() if p.is_dir())


async def end(js: JetStreamContext, data: Path, wl: str, *, failed: bool = False, at: datetime | None = None) -> None:
    payload: Any = (Failed(reason=FailureReason(stage="runner", code="runner.x", message="m")) if failed else
                    WorkloadExited(node_id="n", exit_code=0, duration_s=0.1, output_digest=DIGEST))
    etype = EventType.FAILED if failed else EventType.WORKLOAD_EXITED
    event = Event(type=etype, workload_id=wl, source=Source(component="test"), payload=payload,
                  **({"occurred_at": at} if at else {}))
    await genuine_publisher(js, data).publish(event)  # as the runner (or a failing stage) would


async def test_layouts_go_when_the_workload_exits_or_fails_and_stay_while_it_runs(
    js: JetStreamContext, nats_server: Any, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path, nats_url=nats_server.url)
    exited, failed, running = workload(tmp_path), workload(tmp_path), workload(tmp_path)
    async with serve_retention(settings, Endpoints(nats_url=nats_server.url), interval=0.1):
        await end(js, tmp_path, exited)
        await end(js, tmp_path, failed, failed=True)
        for _ in range(100):
            if not layouts(tmp_path, exited) and not layouts(tmp_path, failed):
                break
            await asyncio.sleep(0.1)
        assert layouts(tmp_path, exited) == [] and layouts(tmp_path, failed) == []
        assert layouts(tmp_path, running) == ["plain", "signed"]
    # what audit and a late redelivery need stays
    assert sorted(p.name for p in (tmp_path / "images" / exited).iterdir()) == ["initdata.toml", "signed.json"]


async def test_retention_keeps_the_latest_workloads_and_the_recent_ones(
    js: JetStreamContext, nats_server: Any, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old, older, recent = workload(tmp_path), workload(tmp_path), workload(tmp_path)
    await end(js, tmp_path, older, at=now - timedelta(hours=3))
    await end(js, tmp_path, old, at=now - timedelta(hours=2))
    await end(js, tmp_path, recent, at=now - timedelta(minutes=5))

    keep_two = RetentionLoop(js, load_settings(data_dir=tmp_path, retain_workloads=2))
    assert await keep_two.tick(now) == [older]
    assert layouts(tmp_path, old) == layouts(tmp_path, recent) == ["plain", "signed"]

    keep_an_hour = RetentionLoop(js, load_settings(data_dir=tmp_path, retain_hours=1.0))
    assert await keep_an_hour.tick(now) == [old]
    assert layouts(tmp_path, recent) == ["plain", "signed"]
    # the limit passes: the last one goes too
    assert await keep_an_hour.tick(now + timedelta(hours=1)) == [recent]
    assert layouts(tmp_path, recent) == []
