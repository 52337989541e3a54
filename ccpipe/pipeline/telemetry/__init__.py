"""Telemetry: Prometheus metrics, OpenTelemetry traces, and the ``/metrics``, ``/healthz`` and ``/readyz`` routes.

One home for every signal an operator scrapes or collects, so the stages never instrument
themselves: the runtime counts and times each handled input and opens its span, the bus puts the
W3C ``traceparent`` on every published event and counts what the KBS decided, the audit log sets
its ingest lag. :mod:`.metrics` holds the metric families, :mod:`.tracing` the tracer (off unless
``CCPIPE_OTLP_ENDPOINT`` is set or a test installs a provider), :mod:`.http` the routes and the
small listener of processes that serve no HTTP of their own (``CCPIPE_METRICS_PORT``).
"""
