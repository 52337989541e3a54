"""Every event a stage emits is signed by that stage's key, and the trail can tell who said what."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.event_trust import SignatureVerdict, check_event_signature, input_trust
from ccpipe.pipeline.reader import read_events, workload_event
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer, keyring_path
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, WorkloadExited, WorkloadRunning

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "cd" * 32


async def _exited(event: Event) -> Sequence[Output]:
    return [Output(EventType.WORKLOAD_EXITED, WorkloadExited(
        node_id="n1", exit_code=0, duration_s=0.1, output_digest=DIGEST))]


async def _published(js: JetStreamContext, workload_id: str, count: int) -> list:  # type: ignore[type-arg]
    for _ in range(100):
        stored = await read_events(js, workload_id)
        if len(stored) >= count:
            return stored
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} events for {workload_id}")


async def test_stage_outputs_are_signed_by_the_stage(nats_server: EmbeddedNats, js: JetStreamContext,
                                                     workload_id: str, data_dir: Path) -> None:
    settings = load_settings(data_dir=data_dir, max_deliver=2, ack_wait_s=2.0)
    spec = StageSpec("runner", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), _exited)
    async with run_stages(nats_server.url, settings, [spec]):
        src = Event(type=EventType.WORKLOAD_RUNNING, workload_id=workload_id, source=Source(component="runner"),
                    payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))
        await EventPublisher(js, signer=event_signer(data_dir)).publish(src)
        stored = await _published(js, workload_id, 2)

    ring = Keyring.load(keyring_path(data_dir))
    assert "runner" in ring.components()
    verdicts = {s.event.type: check_event_signature(ring, s.data, s.headers.get(SIGNATURE_HEADER)).verdict
                for s in stored if s.event}
    assert verdicts == {EventType.WORKLOAD_RUNNING: SignatureVerdict.VALID,
                        EventType.WORKLOAD_EXITED: SignatureVerdict.VALID}

    # The same bytes altered by one character no longer verify: the trail flags them.
    out = next(s for s in stored if s.event and s.event.type == EventType.WORKLOAD_EXITED)
    forged = out.data.replace(b'"exit_code":0', b'"exit_code":1')
    assert forged != out.data
    assert check_event_signature(ring, forged, out.headers[SIGNATURE_HEADER]).verdict != SignatureVerdict.VALID

    # workload_event finds the latest event of a type directly, and says clearly when there is none.
    latest = await workload_event(js, workload_id, EventType.WORKLOAD_EXITED, trust=input_trust(data_dir))
    assert latest.id == out.event.id
    with pytest.raises(InvalidInput, match="has no built event"):
        await workload_event(js, workload_id, EventType.BUILT, trust=input_trust(data_dir))
