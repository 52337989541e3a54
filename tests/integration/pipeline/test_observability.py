"""Metrics, traces and health of a running pipeline, watched while one workload goes from push to exit.

One embedded pipeline (``ccpipe up`` in-process, real nats-server and registry) runs the demo
workload once, with an in-memory span exporter installed; the tests then read what it left:
``/metrics`` before and after (parsed with prometheus_client's own text parser), the spans, and
``/healthz`` and ``/readyz`` of the KBS and the audit API.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.cli.submit import cmd_submit
from ccpipe.pipeline.cli.up import embedded_emulation, running_pipeline
from ccpipe.pipeline.nats_auth import OBSERVER
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.telemetry.tracing import use_tracer_provider
from ccpipe.schemas.events import EventType

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FLOW_STAGES = ("build", "attest", "sign", "push", "schedule")
"""The stages every workload passes, in order, before its runner node's stage."""


@dataclass
class ObservedRun:
    """What one workload's run left behind."""

    endpoints: Endpoints
    workload_id: str
    before: Samples
    after: Samples
    spans: list[ReadableSpan]
    health: dict[str, tuple[int, dict[str, object]]]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a labelled counter appears at its first increment)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse_metrics(await resp.text())


async def wait_for_end(settings_nats: str, data: Path, workload_id: str, timeout: float = 240.0) -> EventType:
    settings = load_settings(data_dir=data)
    nc = await connect_as(settings, settings_nats, OBSERVER, name="ccpipe-test-observe")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            types = {s.event.type for s in await read_events(nc.jetstream(), workload_id) if s.event}
            for end in (EventType.WORKLOAD_EXITED, EventType.FAILED):
                if end in types:
                    return end
            await asyncio.sleep(0.5)
        raise AssertionError(f"workload {workload_id} did not end within {timeout:.0f} s")
    finally:
        await nc.close()


@pytest.fixture(scope="module")
async def observed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ObservedRun]:
    root = tmp_path_factory.mktemp("observe")
    data = root / "data"
    settings, _ = embedded_emulation(load_settings(data_dir=data))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        async with running_pipeline(settings) as eps, aiohttp.ClientSession() as http:
            assert eps.kbs_url and eps.audit_api_url
            before = await scrape(http, eps.kbs_url)
            _, work = make_demo_repository(root / "repo", data)
            # submitted in-process (what the git hook runs), so its root span is exported here too
            assert await cmd_submit(settings, argparse.Namespace(hook=False, path=str(work), ref=None,
                                                                 json=True)) == 0
            submitted = [s for s in exporter.get_finished_spans() if s.name.startswith("submit")]
            workload_id = str(submitted[0].attributes["ccpipe.workload_id"])  # type: ignore[index]
            assert await wait_for_end(eps.nats_url, data, workload_id) is EventType.WORKLOAD_EXITED
            await asyncio.sleep(2.5)  # the audit log indexes the last events and measures its lag each second
            after = await scrape(http, eps.kbs_url)
            health: dict[str, tuple[int, dict[str, object]]] = {}
            for service, base in (("kbs", eps.kbs_url), ("audit", eps.audit_api_url)):
                for path in ("/healthz", "/readyz"):
                    async with http.get(f"{base}{path}") as resp:
                        health[f"{service}{path}"] = (resp.status, await resp.json())
            audit = await scrape(http, eps.audit_api_url)
            assert value(audit, "ccpipe_stage_handled_total", stage="build", outcome="ok") == \
                value(after, "ccpipe_stage_handled_total", stage="build", outcome="ok")  # one process, one registry
            yield ObservedRun(eps, workload_id, before, after, list(exporter.get_finished_spans()), health)
    finally:
        use_tracer_provider(None)
        provider.shutdown()


def _stage(span: ReadableSpan) -> str:
    """The stage a span is the handling of ("" for the submit span)."""
    return str((span.attributes or {}).get("ccpipe.stage", ""))


def test_stage_counters_and_latency_move_when_a_workload_runs(observed: ObservedRun) -> None:
    runner = next(stage for stage in map(_stage, observed.spans) if stage.startswith("runner-"))
    stages = (*FLOW_STAGES, runner)
    for stage in stages:
        for name, labels in (("ccpipe_stage_handled_total", {"stage": stage, "outcome": "ok"}),
                             ("ccpipe_stage_handler_duration_seconds_count", {"stage": stage})):
            assert value(observed.after, name, **labels) > value(observed.before, name, **labels), (name, stage)
    assert value(observed.after, "ccpipe_events_published_total", component="build", type="built") >= 1


def test_kbs_counts_attestations_and_releases_by_verdict(observed: ObservedRun) -> None:
    def attested(samples: Samples) -> float:
        return sum(v for (name, _), v in samples.items() if name == "kbs_attestation_successes_total")

    assert attested(observed.after) > attested(observed.before)
    assert value(observed.after, "kbs_attestation_requests_total") > value(observed.before,
                                                                           "kbs_attestation_requests_total")
    assert value(observed.after, "ccpipe_kbs_key_requests_total", verdict="released") > \
        value(observed.before, "ccpipe_kbs_key_requests_total", verdict="released")


def test_audit_ingest_lag_and_nats_reconnects_are_exported(observed: ObservedRun) -> None:
    assert value(observed.after, "ccpipe_audit_indexed_seq") > value(observed.before, "ccpipe_audit_indexed_seq")
    assert value(observed.after, "ccpipe_audit_stream_last_seq") >= value(observed.after, "ccpipe_audit_indexed_seq")
    assert ("ccpipe_audit_ingest_lag_events", frozenset()) in observed.after
    assert ("ccpipe_audit_ingest_lag_seconds", frozenset()) in observed.after
    assert any(name == "ccpipe_nats_reconnects_total" for name, _ in observed.after)


def test_one_trace_spans_every_stage_and_parents_follow_the_flow(observed: ObservedRun) -> None:
    ours = [s for s in observed.spans if (s.attributes or {}).get("ccpipe.workload_id") == observed.workload_id]
    root = next(s for s in ours if s.name.startswith("submit"))
    assert root.parent is None
    assert root.context is not None
    assert {s.context.trace_id for s in ours if s.context} == {root.context.trace_id}

    by_stage: dict[str, list[ReadableSpan]] = {}
    for s in ours:
        by_stage.setdefault(_stage(s), []).append(s)
    runner = next(stage for stage in by_stage if stage.startswith("runner-"))
    parent_id = root.context.span_id
    for stage in (*FLOW_STAGES, runner):
        # the span that handled the input published by the previous step (other inputs of the
        # same stage, e.g. the sign stage's look at the KBS's attestation, are children elsewhere)
        child = next((s for s in by_stage[stage] if s.parent and s.parent.span_id == parent_id), None)
        assert child is not None, f"no {stage} span is a child of the previous step's span"
        assert child.context is not None
        parent_id = child.context.span_id


def test_health_and_readiness_answer(observed: ObservedRun) -> None:
    assert observed.health["kbs/healthz"] == (200, {"status": "ok"})
    assert observed.health["kbs/readyz"] == (200, {"status": "ready"})
    assert observed.health["audit/healthz"] == (200, {"status": "ok"})
    status, body = observed.health["audit/readyz"]
    assert status == 200, body
