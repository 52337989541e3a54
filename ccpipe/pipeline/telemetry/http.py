"""``/metrics``, ``/healthz`` and ``/readyz``: mounted on a service's own aiohttp application, or
served by a small listener of their own (:func:`serve_observability`) in a process that has none.

* ``/metrics``: the process's Prometheus registry in the text exposition format.
* ``/healthz``: liveness, 200 while the event loop answers.
* ``/readyz``: 200 when every NATS connection the process holds open is connected (see
  :mod:`.health`), else 503 naming the ones that are reconnecting.

The listener is off by default: ``CCPIPE_METRICS_PORT`` opens it (``0``: a free port, logged) on
``CCPIPE_METRICS_HOST`` (loopback unless set), so no process opens a port nobody asked for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ccpipe.pipeline.telemetry.health import not_ready
from ccpipe.pipeline.telemetry.tracing import attached_context
from ccpipe.schemas.config import Settings

log = logging.getLogger("ccpipe.telemetry")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition of this process's metrics."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 while the process serves."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when every open NATS connection is connected, else 503 naming the others."""
    waiting = not_ready()
    if waiting:
        return web.json_response({"status": "not ready", "reconnecting": waiting}, status=503)
    return web.json_response({"status": "ready"})


@web.middleware
async def continue_trace(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Handle the request in the caller's trace (its ``traceparent`` header), when tracing."""
    with attached_context(request.headers):
        return await handler(request)


def instrument_app(app: web.Application) -> None:
    """Mount ``/metrics``, ``/healthz`` and ``/readyz`` on ``app`` (leaving any it serves already) and
    continue callers' traces in its handlers; call before the application starts."""
    taken = {resource.canonical for resource in app.router.resources()}
    for path, handler in (("/metrics", metrics), ("/healthz", healthz), ("/readyz", readyz)):
        if path not in taken:
            app.router.add_get(path, handler)
    app.middlewares.append(continue_trace)


@asynccontextmanager
async def serve_observability(settings: Settings) -> AsyncIterator[str | None]:
    """While the block is open, serve the three routes on ``CCPIPE_METRICS_PORT``; yields the base
    URL, or None when the setting is unset (nothing is opened).

    Raises ``OSError`` when the port cannot be bound.
    """
    if settings.metrics_port is None:
        yield None
        return
    app = web.Application()
    instrument_app(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else settings.metrics_port
        url = f"http://{settings.metrics_host}:{port}"
        log.info("metrics and health on %s/metrics", url)
        yield url
    finally:
        await runner.cleanup()
