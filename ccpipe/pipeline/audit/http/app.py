"""The aiohttp application of the audit API and web page. Read-only: GET (and HEAD) only.

Routes (all documented in :mod:`.openapi`, served at ``/openapi.json``):

* ``/`` and ``/static/{verify.js,app.js,style.css}`` — the web page;
* ``/api/v1/events``, ``/api/v1/events/{id}``, ``/api/v1/events/{id}/proof``,
  ``/api/v1/leaves/{index}/proof`` (a logged message without an event id);
* ``/api/v1/workloads``, ``/api/v1/workloads/{id}/journey``, ``/api/v1/overview`` (the dashboard);
* ``/api/v1/keys/{repo/type/tag}/recipients``, ``/api/v1/images/{digest}/runs``;
* ``/api/v1/checkpoint`` (text/plain signed note), ``/api/v1/consistency?from=&to=``;
* ``/readyz``: the audit service's status (state, reason, ingest lag); 200 only while it logs
  every event, 503 while it stands by, is degraded, refused its store or reports nothing;
* ``/metrics`` (Prometheus) and ``/healthz`` (liveness), from :mod:`ccpipe.pipeline.telemetry.http`.

Every failure becomes ``{"error": {code, message, hint}}`` through one middleware, with the
status :func:`.errors.http_status` picks. Database work runs on worker threads
(:class:`ReaderThread`) so the event loop never blocks on SQLite or PostgreSQL: one for light
requests, one for heavy queries that admits a bounded number (:mod:`.limits`).

Imports aiohttp, :mod:`ccpipe.pipeline.audit` and the telemetry routes only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ccpipe.pipeline.audit.http import params
from ccpipe.pipeline.audit.http.errors import ApiError, BadRequest, Busy, NotFound, http_status
from ccpipe.pipeline.audit.http.limits import first_request_arrived
from ccpipe.pipeline.audit.http.models import ServiceStatus
from ccpipe.pipeline.audit.http.openapi import openapi_document
from ccpipe.pipeline.audit.http.reader import AuditReader
from ccpipe.pipeline.audit.liveness import AuditState, AuditStatus
from ccpipe.pipeline.telemetry.http import healthz, metrics
from ccpipe.schemas.errors import CcpipeError

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_FILES = {
    "index.html": "text/html",
    "verify.js": "text/javascript",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
"""The page's assets (package data of ``ccpipe.pipeline.audit.http``) and their media types."""

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Content-Security-Policy of every response: the page runs only its own script and talks only to
this server, so event text that smuggles markup cannot run or phone home."""


class ReaderThread:
    """Runs every call of one :class:`AuditReader` on one dedicated thread.

    ``open_reader`` is called on that thread at the first request (sqlite3 connections may
    only be used by the thread that opened them); ``close_reader`` on it at shutdown. With
    ``max_pending``, at most that many calls are running or queued at once; one more raises
    :class:`Busy` at once instead of waiting behind them.
    """

    def __init__(self, open_reader: Callable[[], AuditReader],
                 close_reader: Callable[[AuditReader], None] | None = None, *,
                 max_pending: int | None = None) -> None:
        self._open = open_reader
        self._close = close_reader
        self._reader: AuditReader | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-api")
        self._max_pending = max_pending
        # Calls submitted and not yet finished. Counted down when the call really ends (or is
        # cancelled before it ran), not when its awaiting request gives up, so the bound holds.
        self._pending = 0
        self._pending_lock = threading.Lock()

    def _run(self, fn: Callable[[AuditReader], T]) -> T:
        if self._reader is None:
            self._reader = self._open()
        return fn(self._reader)

    def _release(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    async def call(self, fn: Callable[[AuditReader], T]) -> T:
        """``fn(reader)`` on the reader's thread; raises whatever ``fn`` raises, or :class:`Busy`
        when ``max_pending`` calls are already running or queued."""
        with self._pending_lock:
            if self._max_pending is not None and self._pending >= self._max_pending:
                raise Busy(f"{self._pending} heavy queries are already running or waiting; "
                           f"retry in {Busy.retry_after_s} s")
            self._pending += 1
        try:
            future = self._pool.submit(self._run, fn)
        except BaseException:  # the pool was shut down: nothing was queued
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _shutdown(self) -> None:
        if self._reader is not None and self._close is not None:
            self._close(self._reader)
        self._reader = None

    async def aclose(self) -> None:
        """Close the reader on its thread, then stop the thread."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._shutdown)
        self._pool.shutdown(wait=True)


READER = web.AppKey("reader", ReaderThread)
"""The reader of light requests: one event, its proof, the checkpoint, consistency."""
HEAVY_READER = web.AppKey("heavy_reader", ReaderThread)
"""The reader of heavy queries (lists, journeys, searches), bounded: a flood of them is answered
503 rather than delaying light requests or every client for many seconds."""
ASSETS = web.AppKey("assets", dict)
STATUS: web.AppKey[Callable[[], AuditStatus]] = web.AppKey("status")


def _error_response(code: str, message: str, hint: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "hint": hint}}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except CcpipeError as exc:
        status = http_status(exc)
        resp = _error_response(exc.code, exc.message, exc.hint, status)
        if isinstance(exc, Busy):
            # The limit doing its job, not a fault: no log line per refused request of a flood.
            resp.headers["Retry-After"] = str(exc.retry_after_s)
        elif status >= 500:
            log.warning("audit API %s: %s", request.path, exc.one_line())
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown routes and methods answer in the API's error shape too.
        code = {404: NotFound.code, 405: "audit.api.method_not_allowed"}.get(exc.status, ApiError.code)
        hint = "the API is read-only and documented at /openapi.json"
        resp = _error_response(code, f"{request.method} {request.path}: {exc.reason}", hint, exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        log.exception("audit API %s failed", request.path)
        return _error_response("audit.api.internal", f"{request.path}: internal error", "see the server log", 500)
    return response


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _model(body: BaseModel) -> web.Response:
    return web.Response(text=body.model_dump_json(), content_type="application/json")


async def _ask(request: web.Request, fn: Callable[[AuditReader], T]) -> T:
    return await request.app[READER].call(fn)


async def _heavy(request: web.Request, fn: Callable[[AuditReader], BaseModel]) -> web.Response:
    # Serialised on the heavy reader's thread too: a page of thousands of events is a lot of
    # JSON, and the event loop must keep answering light requests and refusals meanwhile.
    text = await request.app[HEAVY_READER].call(lambda r: fn(r).model_dump_json())
    return web.Response(text=text, content_type="application/json")


async def events(request: web.Request) -> web.Response:
    """``GET /api/v1/events``: one page of events matching the filters."""
    f = params.event_filter(request.query)
    return await _heavy(request, lambda r: r.events(f))


async def event(request: web.Request) -> web.Response:
    """``GET /api/v1/events/{event_id}``."""
    eid = params.event_id(request.match_info["event_id"])
    return _model(await _ask(request, lambda r: r.event(eid)))


async def proof(request: web.Request) -> web.Response:
    """``GET /api/v1/events/{event_id}/proof``."""
    eid = params.event_id(request.match_info["event_id"])
    return _model(await _ask(request, lambda r: r.proof(eid)))


async def leaf_proof(request: web.Request) -> web.Response:
    """``GET /api/v1/leaves/{index}/proof``."""
    index = params.integer(request.match_info["index"], "leaf index", low=0, high=params.INT64_MAX)
    return _model(await _ask(request, lambda r: r.leaf_proof(index)))


async def workloads(request: web.Request) -> web.Response:
    """``GET /api/v1/workloads?search=&limit=``."""
    q = params.single_values(request.query, ("search", "limit"), may_be_empty=("search",))
    search = q.get("search", "")
    if len(search) > 128:
        raise BadRequest("search is longer than 128 characters")
    limit = params.integer(q["limit"], "limit", low=1, high=params.MAX_WORKLOADS) if "limit" in q else 20
    return await _heavy(request, lambda r: r.workloads(search, limit))


async def overview(request: web.Request) -> web.Response:
    """``GET /api/v1/overview?state=&tee=&node_id=&since=&until=&limit=``: the dashboard."""
    f = params.overview_filter(request.query)
    return await _heavy(request, lambda r: r.overview(f))


async def journey(request: web.Request) -> web.Response:
    """``GET /api/v1/workloads/{workload_id}/journey``."""
    wl = params.workload_id(request.match_info["workload_id"])
    return await _heavy(request, lambda r: r.journey(wl))


async def recipients(request: web.Request) -> web.Response:
    """``GET /api/v1/keys/{resource}/recipients`` (the resource's slashes stay in the path)."""
    resource = params.key_resource(request.match_info["resource"])
    return await _heavy(request, lambda r: r.key_recipients(resource))


async def runs(request: web.Request) -> web.Response:
    """``GET /api/v1/images/{digest}/runs``."""
    digest = params.digest(request.match_info["digest"])
    return await _heavy(request, lambda r: r.image_runs(digest))


async def checkpoint(request: web.Request) -> web.Response:
    """``GET /api/v1/checkpoint``: the latest signed note, as text."""
    cp = await _ask(request, lambda r: r.latest_checkpoint())
    return web.Response(body=cp.note, content_type="text/plain", charset="utf-8")


async def consistency(request: web.Request) -> web.Response:
    """``GET /api/v1/consistency?from=&to=``."""
    q = params.single_values(request.query, ("from", "to"))
    if "from" not in q:
        raise BadRequest("consistency needs from=<tree size> (and optionally to=<tree size>)")
    size1 = params.integer(q["from"], "from", low=1, high=params.INT64_MAX)
    size2 = params.integer(q["to"], "to", low=1, high=params.INT64_MAX) if "to" in q else None
    return _model(await _ask(request, lambda r: r.consistency(size1, size2)))


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 while the audit service logs every event, else 503; the body says why."""
    status = request.app[STATUS]()
    body = ServiceStatus.model_validate(status.to_json())
    return web.Response(text=body.model_dump_json(), content_type="application/json",
                        status=200 if status.ready else 503)


def _no_status() -> AuditStatus:
    return AuditStatus(AuditState.DEGRADED, "this API was started without an audit service to report on")


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.json_response(openapi_document(), dumps=lambda d: json.dumps(d, indent=2))


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("ccpipe.pipeline.audit.http") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


async def page(request: web.Request) -> web.Response:
    """``GET /``: the web page."""
    return web.Response(body=request.app[ASSETS]["index.html"], content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    """``GET /static/{name}``: one of :data:`STATIC_FILES`."""
    name = request.match_info["name"]
    if name not in STATIC_FILES or name == "index.html":
        raise NotFound(f"static file {name[:60]!r} does not exist")
    return web.Response(body=request.app[ASSETS][name], content_type=STATIC_FILES[name], charset="utf-8")


def audit_app(reader: ReaderThread, heavy_reader: ReaderThread,
              status: Callable[[], AuditStatus] = _no_status) -> web.Application:
    """The application over ``reader`` (light requests) and ``heavy_reader`` (heavy queries);
    closing the application closes both.

    ``status`` gives the audit service's current status for ``/readyz`` (it must not block:
    it reads a small file).
    """
    app = web.Application(middlewares=[first_request_arrived, _headers, _errors])
    app[READER] = reader
    app[HEAVY_READER] = heavy_reader
    app[STATUS] = status
    app[ASSETS] = _load_assets()

    async def _close(app: web.Application) -> None:
        await app[READER].aclose()
        await app[HEAVY_READER].aclose()

    app.on_cleanup.append(_close)
    routes: list[tuple[str, Any]] = [
        ("/", page),
        ("/static/{name}", static),
        ("/openapi.json", openapi),
        ("/api/v1/events", events),
        ("/api/v1/events/{event_id}", event),
        ("/api/v1/events/{event_id}/proof", proof),
        ("/api/v1/leaves/{index}/proof", leaf_proof),
        ("/api/v1/workloads", workloads),
        ("/api/v1/overview", overview),
        ("/api/v1/workloads/{workload_id}/journey", journey),
        ("/api/v1/keys/{resource:.+}/recipients", recipients),
        ("/api/v1/images/{digest}/runs", runs),
        ("/api/v1/checkpoint", checkpoint),
        ("/api/v1/consistency", consistency),
        ("/readyz", readyz),
        ("/healthz", healthz),
        ("/metrics", metrics),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler)
    return app
