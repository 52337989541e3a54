"""OpenTelemetry traces across the stages: one trace per workload, from the push to the exit.

The W3C ``traceparent`` travels in the NATS headers of every event (:func:`inject`, called by
the publisher); each stage's handling of an input is a span whose parent is the span that
published that input (:func:`consumer_span`, opened by the runtime); ``ccpipe submit`` opens the
root (:func:`root_span`). The headers are outside the signed event bytes, so tracing never
changes what is signed, hashed or logged.

Tracing is off unless a provider is installed: :func:`configure_tracing` installs one that
exports over OTLP/HTTP when ``CCPIPE_OTLP_ENDPOINT`` is set, and tests install one with an
in-memory exporter (:func:`use_tracer_provider`). While off, each helper costs one ``None``
check: no context is extracted, no span object is made and no header is added. The provider is
kept here rather than in OpenTelemetry's global, which can be set only once per process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ccpipe.schemas.config import Settings

if TYPE_CHECKING:  # the SDK is imported only by a process that traces
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "traceparent"
"""The W3C Trace Context header, as it appears among an event's NATS headers."""
TRACER_NAME = "ccpipe"

_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` from now on (``None``: stop tracing); the previous one is not shut down."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def tracing_enabled() -> bool:
    """True while a provider is installed."""
    return _tracer is not None


def configure_tracing(settings: Settings, service: str) -> None:
    """Export spans over OTLP/HTTP to ``CCPIPE_OTLP_ENDPOINT`` (its ``/v1/traces``) as ``service``;
    nothing when the setting is unset."""
    if not settings.otlp_endpoint:
        return
    # imported here: the SDK and the exporter (protobuf, requests) cost a process that does not
    # export tens of milliseconds at start-up, every git push's 'ccpipe submit' among them
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    use_tracer_provider(provider)


def shutdown_tracing() -> None:
    """Export what is buffered and stop tracing (before a process exits)."""
    provider = _provider
    use_tracer_provider(None)
    if provider is not None:
        provider.shutdown()


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``headers``, when tracing."""
    if _tracer is not None:
        _propagator.inject(headers)


@contextmanager
def consumer_span(name: str, headers: Mapping[str, str] | None,
                  attributes: Mapping[str, AttributeValue]) -> Iterator[Span | None]:
    """A span for handling one message, child of the span named by its ``traceparent``; None when off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    parent = _propagator.extract(dict(headers or {}))
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


@contextmanager
def attached_context(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the context named by ``headers``' ``traceparent`` current (an HTTP request's), so what
    the request publishes joins the caller's trace."""
    if _tracer is None:
        yield
        return
    token = attach(_propagator.extract(headers))
    try:
        yield
    finally:
        detach(token)


@contextmanager
def root_span(name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[Span | None]:
    """The first span of a trace (a new workload); None when off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, context=Context(), kind=SpanKind.PRODUCER,
                                      attributes=attributes) as span:
        yield span


def mark_outcome(span: Span | None, outcome: str, error: str | None = None) -> None:
    """Record how a handling ended on its span (an error status for a failed one)."""
    if span is None:
        return
    span.set_attribute("ccpipe.outcome", outcome)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
