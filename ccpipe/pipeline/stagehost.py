"""Run stages on a broker: provision their consumers, then start FastStream.

Used by ``ccpipe up`` and by tests; the assembly of *which* stages run lives in ``ccpipe.pipeline.app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from faststream.nats import NatsBroker

from ccpipe.pipeline.bus import EventPublisher, provision_consumer, provision_stream, stage_consumer_config
from ccpipe.pipeline.runtime import StageRuntime, StageSpec
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings, nats_servers
from ccpipe.schemas.envelope import input_filter


def make_broker(url: str, *, name: str = "ccpipe") -> NatsBroker:
    """A FastStream broker that reconnects forever and logs quietly (access logs cost ~25 %)."""
    return NatsBroker(nats_servers(url), max_reconnect_attempts=-1, name=name, logger=None)


@asynccontextmanager
async def run_stages(
    url: str, settings: Settings, specs: Sequence[StageSpec], *, instance: str = "", nak_base_delay_s: float = 1.0
) -> AsyncIterator[StageRuntime]:
    """Provision the stream and each stage's durable consumer, run the stages, stop on exit."""
    broker = make_broker(url, name=f"ccpipe-stages-{instance or 'local'}")
    signer = event_signer(settings.data_dir)
    runtime = StageRuntime(
        settings, publisher=lambda: EventPublisher(broker.connection.jetstream(), signer=signer),
        instance=instance, nak_base_delay_s=nak_base_delay_s,
    )
    for spec in specs:
        runtime.register(broker, spec)
    await broker.connect()
    js = broker.connection.jetstream()
    await provision_stream(js)
    for spec in specs:
        await provision_consumer(js, stage_consumer_config(spec.name, input_filter(spec.input_type), settings))
    await broker.start()
    try:
        yield runtime
    finally:
        await broker.stop()
