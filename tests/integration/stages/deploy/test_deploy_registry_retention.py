"""Registry retention against a real nats-server and a real docker-registry: the images of ended
workloads go (and the disk shrinks), running workloads' images and anything they share stay."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.registry_gc import storage_bytes
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Failed, Pushed, WorkloadExited
from ccpipe.schemas.failure import FailureReason
from ccpipe.stages.deploy.registry_retention import RegistryRetention, workload_tags
from tests.genuine_events import genuine_publisher
from tests.integration.pipeline.registry_push_raw import manifest_status, push_image, retag

pytestmark = pytest.mark.integration
REPO = "ccpipe/hello"
OUTPUT = "sha256:" + "ef" * 32


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[EmbeddedRegistry]:
    reg = EmbeddedRegistry(tmp_path / "registry").start()
    yield reg
    reg.stop()


async def publish(js: JetStreamContext, data: Path, wl: str, payload: Any, etype: EventType,
                  at: datetime | None = None) -> None:
    event = Event(type=etype, workload_id=wl, source=Source(component="test"), payload=payload,
                  **({"occurred_at": at} if at else {}))
    await genuine_publisher(js, data).publish(event)


async def pushed(js: JetStreamContext, data: Path, reg: EmbeddedRegistry, wl: str, digest: str | None = None) -> str:
    """Push ``wl``'s image (a new one, or the manifest ``digest`` again under its tag) and say so in the trail."""
    if digest is None:
        digest = push_image(reg.address, REPO, wl, [os.urandom(1_000_000)])
    else:
        retag(reg.address, REPO, digest, wl)
    await publish(js, data, wl, Pushed(registry=reg.address, repository=REPO, image_digest=digest,
                                       reference=f"docker://{reg.address}/{REPO}@{digest}"), EventType.PUSHED)
    return digest


async def ended(js: JetStreamContext, data: Path, wl: str, *, failed: bool = False,
                at: datetime | None = None) -> None:
    if failed:
        await publish(js, data, wl, Failed(reason=FailureReason(stage="runner", code="runner.x", message="m")),
                      EventType.FAILED, at)
    else:
        await publish(js, data, wl, WorkloadExited(node_id="n", exit_code=0, duration_s=0.1, output_digest=OUTPUT),
                      EventType.WORKLOAD_EXITED, at)


def wid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_registry_retention_removes_ended_images_and_keeps_live_ones(
    js: JetStreamContext, nats_server: Any, tmp_path: Path, registry: EmbeddedRegistry
) -> None:
    data = tmp_path / "data"
    now = datetime.now(UTC)
    old, recent, failed, live, unpushed = wid("old"), wid("recent"), wid("failed"), wid("live"), wid("unpushed")
    for wl in (old, recent, failed, live):
        await pushed(js, data, registry, wl)
    await ended(js, data, old, at=now - timedelta(hours=3))
    await ended(js, data, recent, at=now - timedelta(minutes=5))
    await ended(js, data, failed, failed=True, at=now - timedelta(hours=2))
    push_image(registry.address, REPO, unpushed, [os.urandom(1000)])  # tagged, but the trail names no image
    await ended(js, data, unpushed, at=now - timedelta(hours=3))
    assert set(workload_tags(registry.storage)) == {old, recent, failed, live, unpushed}
    before = storage_bytes(registry.storage)

    keep_an_hour = RegistryRetention(js, load_settings(data_dir=data, retain_hours=1.0), registry)
    assert await keep_an_hour.tick(now) == sorted([old, failed])
    assert before - storage_bytes(registry.storage) >= 2_000_000, "the disk did not shrink"
    assert set(workload_tags(registry.storage)) == {recent, live, unpushed}
    assert manifest_status(registry.address, REPO, live) == manifest_status(registry.address, REPO, recent) == 200
    # the hour passes: the recent one goes; the live one and the unattributed tag never do
    assert await keep_an_hour.tick(now + timedelta(hours=1)) == [recent]
    assert await keep_an_hour.tick(now + timedelta(days=30)) == []
    assert set(workload_tags(registry.storage)) == {live, unpushed}
    assert manifest_status(registry.address, REPO, live) == 200


async def test_registry_retention_never_removes_an_image_a_live_workload_names(
    js: JetStreamContext, nats_server: Any, tmp_path: Path, registry: EmbeddedRegistry
) -> None:
    data = tmp_path / "data"
    done, running = wid("done"), wid("running")
    digest = await pushed(js, data, registry, done)
    await pushed(js, data, registry, running, digest)  # a second workload pushed the very same manifest
    await ended(js, data, done)
    loop = RegistryRetention(js, load_settings(data_dir=data), registry)
    assert await loop.tick() == []
    assert manifest_status(registry.address, REPO, digest) == 200
    # once the other one ends too, the image goes
    await ended(js, data, running)
    assert await loop.tick() == sorted([done, running])
    assert manifest_status(registry.address, REPO, digest) == 404
