"""Telemetry without a pipeline: span propagation through headers, KBS counters from events, the routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.telemetry import health
from ccpipe.pipeline.telemetry.http import instrument_app, serve_observability
from ccpipe.pipeline.telemetry.metrics import observe_published
from ccpipe.pipeline.telemetry.tracing import (
    TRACEPARENT,
    attached_context,
    consumer_span,
    inject,
    root_span,
    tracing_enabled,
    use_tracer_provider,
)
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import AttestationRejected, EventType, KeyDenied, KeyReleased
from ccpipe.schemas.failure import FailureReason

SPAN_ATTRS = {"ccpipe.workload_id": "w-1"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    use_tracer_provider(provider)
    yield spans
    use_tracer_provider(None)
    provider.shutdown()


def test_while_tracing_is_off_nothing_is_added_or_made() -> None:
    assert not tracing_enabled()
    headers: dict[str, str] = {}
    with root_span("submit", SPAN_ATTRS) as root, consumer_span("build", {TRACEPARENT: "00-" + "1" * 32 + "-"
                                                                         + "2" * 16 + "-01"}, SPAN_ATTRS) as span:
        inject(headers)
        with attached_context({TRACEPARENT: "garbage"}):
            pass
    assert root is None and span is None and headers == {}


def test_a_handling_span_is_the_child_of_the_span_that_published_its_input(exporter: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {"Nats-Msg-Id": "m"}
    with root_span("submit submitted", SPAN_ATTRS):
        inject(headers)
    assert headers[TRACEPARENT].startswith("00-")
    with consumer_span("build submitted", headers, {"ccpipe.stage": "build"}):
        downstream: dict[str, str] = {}
        inject(downstream)
    with consumer_span("attest built", downstream, {"ccpipe.stage": "attest"}):
        pass
    submit, build, attest = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert submit.parent is None and submit.context is not None and build.context is not None
    assert {s.context.trace_id for s in (submit, build, attest) if s.context} == {submit.context.trace_id}
    assert build.parent is not None and build.parent.span_id == submit.context.span_id
    assert attest.parent is not None and attest.parent.span_id == build.context.span_id


def test_an_input_without_traceparent_starts_a_trace_of_its_own(exporter: InMemorySpanExporter) -> None:
    with consumer_span("schedule pushed", None, {}):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_an_http_request_continues_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {}
    with root_span("runner scheduled", SPAN_ATTRS) as caller:
        inject(headers)
    assert caller is not None
    with attached_context(headers):
        assert get_current_span().get_span_context().span_id == caller.get_span_context().span_id


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _kbs_event(etype: EventType, payload: object, component: str = "kbs") -> Event:
    return Event(type=etype, workload_id="w-1", source=Source(component=component), payload=payload)


def test_kbs_decisions_are_counted_from_the_events_it_publishes() -> None:
    reason = FailureReason(stage="kbs", code="kbs.policy", message="no")
    before = {
        "failures": _sample("kbs_attestation_failures_total", tee_type="unknown"),
        "requests": _sample("kbs_attestation_requests_total"),
        "released": _sample("ccpipe_kbs_key_requests_total", verdict="released"),
        "denied": _sample("ccpipe_kbs_key_requests_total", verdict="denied"),
    }
    observe_published(_kbs_event(EventType.ATTESTATION_REJECTED, AttestationRejected(reason=reason)))
    observe_published(_kbs_event(EventType.KEY_RELEASED, KeyReleased(resource="r/image-key/w-1")))
    observe_published(_kbs_event(EventType.KEY_DENIED, KeyDenied(resource="r/image-key/w-1", reason=reason)))
    # the same type from another component is no KBS decision
    observe_published(_kbs_event(EventType.KEY_RELEASED, KeyReleased(resource="r/image-key/w-1"), "runner"))
    assert _sample("kbs_attestation_failures_total", tee_type="unknown") == before["failures"] + 1
    assert _sample("kbs_attestation_requests_total") == before["requests"] + 1
    assert _sample("ccpipe_kbs_key_requests_total", verdict="released") == before["released"] + 1
    assert _sample("ccpipe_kbs_key_requests_total", verdict="denied") == before["denied"] + 1
    assert _sample("ccpipe_events_published_total", component="runner", type="key.released") >= 1


class _Connection:
    """Stands in for a nats-py client in the readiness registry."""

    def __init__(self, *, connected: bool) -> None:
        self.is_connected, self.is_closed = connected, False


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_routes_are_mounted_beside_a_services_own_and_answer() -> None:
    async def own_health(request: web.Request) -> web.Response:
        return web.json_response({"status": "mine"})

    app = web.Application()
    app.router.add_get("/healthz", own_health)  # the KBS serves its own: it is kept
    instrument_app(app)
    client = await _client(app)
    try:
        resp = await client.get("/metrics")
        assert resp.status == 200
        names = {f.name for f in text_string_to_metric_families(await resp.text())}
        assert {"ccpipe_stage_handled", "ccpipe_stage_handler_duration_seconds", "kbs_attestation_requests",
                "ccpipe_audit_ingest_lag_events"} <= names
        assert await (await client.get("/healthz")).json() == {"status": "mine"}
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (200, {"status": "ready"})

        away = _Connection(connected=False)
        health.track_connection(away, "ccpipe-runner-n1")  # type: ignore[arg-type]
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready", "reconnecting": ["ccpipe-runner-n1"]}
        away.is_closed = True  # a closed connection no longer counts
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()


async def test_the_listener_is_off_unless_a_port_is_set(tmp_path: Path) -> None:
    async with serve_observability(load_settings(data_dir=tmp_path)) as url:
        assert url is None
    async with serve_observability(load_settings(data_dir=tmp_path, metrics_port=0)) as url, \
            aiohttp.ClientSession() as http:
        assert url is not None and url.startswith("http://127.0.0.1:")
        async with http.get(f"{url}/healthz") as resp:
            assert await resp.json() == {"status": "ok"}
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert "# TYPE ccpipe_stage_handled_total counter" in await resp.text()
