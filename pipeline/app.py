"""Assembly: which stages run in this ccpipe, and the AsyncAPI document of their subjects.

Imports every stage's handler; imported by nothing but the CLI.
"""

from __future__ import annotations

import json
from typing import Any

from faststream.specification import AsyncAPI

from pipeline.runtime import StageRuntime, StageSpec
from pipeline.stagehost import make_broker
from schemas.config import Settings
from schemas.envelope import SUBJECT_PREFIX, Event
from schemas.events import EventType

VERSION = "0.1.0"


def stage_specs(settings: Settings) -> list[StageSpec]:
    """Every stage of the flow that exists, in flow order."""
    specs: list[StageSpec] = []
    return specs


def final_event_types(settings: Settings) -> set[EventType]:
    """Event types after which a workload has gone as far as the existing stages take it."""
    specs = stage_specs(settings)
    if not specs:
        return {EventType.SUBMITTED, EventType.FAILED}
    return {*specs[-1].output_types, EventType.FAILED, EventType.WORKLOAD_EXITED}


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every subject, generated from the FastStream registrations."""
    broker = make_broker(settings.nats_url or "nats://127.0.0.1:4222")
    runtime = StageRuntime(settings, publisher=lambda: None)  # type: ignore[arg-type,return-value]
    for spec in stage_specs(settings):
        runtime.register(broker, spec)
    # The entry point of the flow is published by the git trigger, not by a stage.
    broker.publisher(
        f"{SUBJECT_PREFIX}.{{workload_id}}.{EventType.SUBMITTED.value}",
        schema=Event,
        title="submit: submitted",
        description="Published by the git hook or `ccpipe submit` for every pushed ref with a valid ccpipe.toml.",
    )
    broker.publisher(
        f"{SUBJECT_PREFIX}.{{workload_id}}.{EventType.FAILED.value}",
        schema=Event,
        title="submit: failed",
        description="Published instead of `submitted` when a push has no valid ccpipe.toml.",
    )
    document = AsyncAPI(
        broker,
        title="ccpipe events",
        version=VERSION,
        description=(
            "Every event of the ccpipe flow. Subjects are ccpipe.evt.<workload_id>.<type>; "
            "all are stored in the JetStream stream CCPIPE_EVENTS (file storage, deny_delete, deny_purge)."
        ),
    )
    doc: dict[str, Any] = json.loads(document.to_specification().to_json())
    return doc
