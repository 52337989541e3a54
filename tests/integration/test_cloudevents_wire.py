"""A stock CloudEvents SDK reads ccpipe's events straight from the stream (issue 18, item 2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from cloudevents.core.formats.json import JSONFormat
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.reader import StoredEvent, read_events
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.cloudevent_wire import STRUCTURED_CONTENT_TYPE
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, WorkloadExited, WorkloadRunning

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "cd" * 32


async def _exited(event: Event) -> Sequence[Output]:
    return [Output(EventType.WORKLOAD_EXITED, WorkloadExited(
        node_id="n1", exit_code=0, duration_s=0.1, output_digest=DIGEST))]


async def _stage_output(js: JetStreamContext, workload_id: str) -> StoredEvent:
    for _ in range(100):
        for stored in await read_events(js, workload_id):
            if stored.event is not None and stored.event.type is EventType.WORKLOAD_EXITED:
                return stored
        await asyncio.sleep(0.1)
    raise AssertionError(f"the stage emitted no workload.exited for {workload_id}")


async def test_the_cloudevents_sdk_parses_an_event_from_the_stream(
    nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str, data_dir: Path
) -> None:
    settings = load_settings(data_dir=data_dir, max_deliver=2, ack_wait_s=2.0)
    spec = StageSpec("runner", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), _exited)
    async with run_stages(nats_server.url, settings, [spec]):
        src = Event(type=EventType.WORKLOAD_RUNNING, workload_id=workload_id,
                    source=Source(component="runner", instance="node 1"),
                    payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))
        await EventPublisher(js, signer=event_signer(data_dir)).publish(src)
        stored = await _stage_output(js, workload_id)  # emitted by the stage runtime, as stored

    assert stored.headers["Content-Type"] == STRUCTURED_CONTENT_TYPE  # structured mode (NATS binding)
    assert stored.event is not None
    ce = JSONFormat().read(None, stored.data)
    assert ce.get_specversion() == "1.0"
    assert ce.get_id() == stored.event.id
    assert ce.get_type() == "dev.ccpipe.workload.exited"
    assert ce.get_source() == "/ccpipe/runner"
    assert ce.get_subject() == workload_id
    assert ce.get_time() == stored.event.occurred_at
    assert ce.get_datacontenttype() == "application/json"
    assert ce.get_extension("causationid") == src.id  # the correlation extension
    assert ce.get_extension("correlationid") == workload_id
    assert ce.get_data() == stored.event.payload.model_dump(mode="json", exclude_none=True)

    # and what the SDK writes back is an event ccpipe reads as the same one
    assert Event.from_wire(JSONFormat().write(ce)) == stored.event


def test_a_legacy_envelope_still_reads_as_the_same_event() -> None:
    event = Event(type=EventType.WORKLOAD_RUNNING, workload_id="w-1", source=Source(component="runner", key_id="k"),
                  causation_id="c-1", payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))
    legacy = json.dumps(event.model_dump(mode="json", exclude_none=True))
    assert "specversion" not in legacy
    assert Event.from_wire(legacy) == event
