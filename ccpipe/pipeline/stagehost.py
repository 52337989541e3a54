"""Run stages on a broker: provision their consumers, then start FastStream.

Used by ``ccpipe up`` and by tests; the assembly of *which* stages run lives in ``ccpipe.pipeline.app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials, NatsSecurity
from nats.aio.client import DEFAULT_INBOX_PREFIX
from nats.errors import Error as NatsError

from ccpipe.pipeline.bus import (
    EventPublisher,
    FirstConnect,
    provision_consumer,
    provision_stream,
    refusal_error,
    refused,
    stage_consumer_config,
)
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.nats_auth import creds_for, inbox_prefix, tls_context
from ccpipe.pipeline.runtime import StageRuntime, StageSpec
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.telemetry.health import track_connection
from ccpipe.pipeline.telemetry.metrics import count_reconnects
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import input_filter
from ccpipe.schemas.settings_rules import nats_servers


def make_broker(url: str, *, name: str = "ccpipe", settings: Settings | None = None,
                identity: str | None = None, guard: FirstConnect | None = None) -> NatsBroker:
    """A FastStream broker that reconnects forever and logs quietly (access logs cost ~25 %).

    With ``settings`` and ``identity`` it connects as that identity (its creds file, the
    configured CA, its private inbox prefix); with ``guard``, a refused first connect raises
    instead of retrying (set ``guard.connected`` once connected).
    """
    creds = creds_for(settings, identity) if settings and identity else None
    tls = tls_context(settings) if settings else None
    security = NatsCredentials(creds, ssl_context=tls) if creds else NatsSecurity(ssl_context=tls) if tls else None
    return NatsBroker(nats_servers(url), max_reconnect_attempts=-1, name=name, logger=None, security=security,
                      inbox_prefix=inbox_prefix(identity) if identity else DEFAULT_INBOX_PREFIX,
                      error_cb=(guard or FirstConnect(0, connected=True)).on_error,
                      reconnected_cb=count_reconnects(name))


@asynccontextmanager
async def run_stages(
    url: str, settings: Settings, specs: Sequence[StageSpec], *, instance: str = "", nak_base_delay_s: float = 1.0
) -> AsyncIterator[StageRuntime]:
    """Provision each stage's durable consumer, run the stages, stop on exit.

    Each stage runs on a broker of its own, connected as the stage's identity (its name, e.g.
    ``build`` or ``runner-<node id>``), so it consumes and publishes only what that identity may.
    ``ccpipe up`` provisions the stream as the admin identity; here it is checked (and created
    only where the credential may, i.e. on a server without authentication).
    """
    # a stage keeps trying to reach NATS (it may start first), but stops at once when refused
    guards = {spec.name: FirstConnect(float("inf")) for spec in specs}
    brokers = {spec.name: make_broker(url, name=f"ccpipe-{spec.name}-{instance or 'local'}", settings=settings,
                                      identity=spec.name, guard=guards[spec.name]) for spec in specs}
    signer = event_signer(settings.data_dir)
    runtime = StageRuntime(
        settings, publisher=lambda: EventPublisher(next(iter(brokers.values())).connection.jetstream(), signer=signer),
        publisher_for=lambda stage: EventPublisher(brokers[stage].connection.jetstream(), signer=signer),
        instance=instance, nak_base_delay_s=nak_base_delay_s, trust=input_trust(settings.data_dir),
    )
    started: list[NatsBroker] = []
    try:
        for spec in specs:
            broker = brokers[spec.name]
            runtime.register(broker, spec)
            try:
                await broker.connect()
            except NatsError as exc:
                if not refused(exc):
                    raise
                raise refusal_error(url, spec.name, creds_for(settings, spec.name), exc) from exc
            guards[spec.name].connected = True
            started.append(broker)
            track_connection(broker.connection, spec.name)
            js = broker.connection.jetstream()
            if spec.bus is not None:
                spec.bus.bind(js)
            await provision_stream(js)
            await provision_consumer(js, stage_consumer_config(spec.name, input_filter(spec.input_type), settings))
        for broker in started:
            await broker.start()
        yield runtime
    finally:
        for spec in specs:
            if spec.bus is not None:
                spec.bus.bind(None)
        for broker in reversed(started):
            await broker.stop()
