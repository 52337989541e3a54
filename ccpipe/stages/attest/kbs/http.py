"""RCAR over HTTP (aiohttp): Trustee's routes, cookie, status codes and error bodies.

One catch-all route under ``/kbs/v0`` dispatches on the first path segment, as Trustee does;
every :class:`~ccpipe.stages.attest.kbs.errors.KbsError` becomes ``{"type", "detail"}`` with its
status in :func:`error_response`, the one mapping. Bodies are read with a hard limit (413 past
:data:`~ccpipe.stages.attest.kbs.core.MAX_BODY_BYTES`, after storing an event); an unexpected
exception becomes a 500 and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ccpipe.schemas.errors import CcpipeError
from ccpipe.schemas.kbs import ErrorInformation
from ccpipe.stages.attest.kbs.admin import KbsAdmin, to_json
from ccpipe.stages.attest.kbs.core import MAX_BODY_BYTES, KbsCore
from ccpipe.stages.attest.kbs.errors import (
    AdminAuthFailed,
    AuthRateExceeded,
    BodyTooLarge,
    InvalidResourcePath,
    KbsError,
    MalformedBody,
)
from ccpipe.stages.attest.kbs.refusals import RefusalTrail
from ccpipe.stages.attest.kbs.resources import ResourceReleaser

COOKIE = "kbs-session-id"
BODY_TIMEOUT_S = 15.0
DRAIN_LIMIT = 64 << 20
"""An oversized body is read and discarded up to this size so the client sees the 413."""
_log = logging.getLogger("ccpipe.kbs")
JSON = "application/json"
_LONE_SESSION_COOKIE = re.compile(rf"{COOKIE}=([A-Za-z0-9_-]+)")
"""A ``Cookie`` header that is just our session cookie (what KBS clients send): its value needs
no parsing beyond this (base64url is never quoted)."""


def error_response(exc: CcpipeError) -> web.Response:
    """Trustee's error body for ``exc`` (a non-KBS error is an internal error, 500)."""
    if isinstance(exc, KbsError):
        body = ErrorInformation(type=exc.error_type, detail=exc.message)
        return web.Response(status=exc.status, body=body.model_dump_json().encode(), content_type=JSON)
    body = ErrorInformation(type="https://github.com/confidential-containers/kbs/errors/PluginInternalError",
                            detail=exc.message)
    return web.Response(status=500, body=body.model_dump_json().encode(), content_type=JSON)


async def read_body(request: web.Request) -> bytes:
    """The body, at most ``MAX_BODY_BYTES``, within :data:`BODY_TIMEOUT_S`.

    Raises :class:`BodyTooLarge` (after draining) or :class:`MalformedBody` for a body that
    does not arrive in time (a slow client must not hold a request open forever).
    """
    if request.content_length is not None and request.content_length > DRAIN_LIMIT:
        raise BodyTooLarge(f"body of {request.content_length} bytes exceeds {MAX_BODY_BYTES}")
    if request.content.is_eof():
        # The whole body came with the headers (as RCAR bodies do): take it as it is, with no
        # timeout to arm and no chunk loop. The same limit applies.
        data = request.content.read_nowait()
        if len(data) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"body of {len(data)} bytes exceeds {MAX_BODY_BYTES}")
        return data
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size <= MAX_BODY_BYTES:
                    chunks.append(chunk)
                elif size > DRAIN_LIMIT:
                    break
    except TimeoutError as exc:
        raise MalformedBody(f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s") from exc
    if size > MAX_BODY_BYTES:
        raise BodyTooLarge(f"body of {size} bytes exceeds {MAX_BODY_BYTES}")
    return b"".join(chunks)


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value.removeprefix("Bearer ").strip() if value.startswith("Bearer ") else None


def session_cookie(request: web.Request) -> str | None:
    """The ``kbs-session-id`` cookie of ``request``, or None.

    A header holding only that cookie is read directly; anything else goes through aiohttp's
    cookie parser (which gives the same value for the direct case, at ten times the cost for a
    sealed session of ~3 KiB).
    """
    header = request.headers.get("Cookie")
    if header is None:
        return None
    lone = _LONE_SESSION_COOKIE.fullmatch(header.strip())
    return lone.group(1) if lone else request.cookies.get(COOKIE)


def _client(request: web.Request) -> str:
    """The peer address the KBS saw (never a header the client chose)."""
    return request.remote or "unknown"


class KbsHttp:
    """The aiohttp application of one KBS."""

    def __init__(self, core: KbsCore, releaser: ResourceReleaser, admin: KbsAdmin,
                 refusals: RefusalTrail | None = None) -> None:
        """Serve ``core`` (handshake), ``releaser`` (resources) and ``admin``; count refused admin
        calls and rate ``/auth`` per client in ``refusals`` (default: a trail on the core's events)."""
        self.core, self.releaser, self.admin = core, releaser, admin
        self.refusals = refusals or RefusalTrail(core.events.requests_refused)

    def app(self) -> web.Application:
        """The application: ``/kbs/v0/{tail}`` for every method, and ``/healthz``."""
        app = web.Application(client_max_size=DRAIN_LIMIT)
        app.router.add_route("*", "/kbs/v0/{tail:.*}", self.dispatch)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 while serving."""
        return web.json_response({"status": "ok"})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route one request; map every refusal to its wire form."""
        try:
            return await self._route(request)
        except AdminAuthFailed as exc:
            # no event per refused call: one summary per client and interval (see .refusals)
            self.refusals.note(_client(request), "admin", exc.code)
            return error_response(exc)
        except CcpipeError as exc:
            return error_response(exc)
        except web.HTTPException:
            raise
        except Exception as exc:
            _log.exception("KBS internal error on %s %s", request.method, request.path)
            return error_response(CcpipeError(f"internal error: {type(exc).__name__}"))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        tail, method = request.match_info["tail"], request.method
        head, _, rest = tail.partition("/")
        cookie = session_cookie(request)
        auth = request.headers.get("Authorization")
        if head == "auth" and not rest and method == "POST":
            if not self.refusals.admit_auth(_client(request)):
                self.refusals.note(_client(request), "auth", AuthRateExceeded.code)
                raise AuthRateExceeded(f"too many handshakes from this client in {self.refusals.interval_s:.0f} s")
            try:
                body = await read_body(request)
            except BodyTooLarge as exc:
                await self.core.events.attestation_rejected(
                    workload_id=None, reason=exc.reason("kbs"), tee=None, evidence=None, outcome=None,
                    node_id=None, thumbprint=None, request_id=uuid.uuid4().hex)
                raise
            challenge, session = await self.core.auth(body)
            return self._with_cookie(web.Response(body=challenge.model_dump_json(by_alias=True).encode(),
                                                  content_type=JSON), session.cookie)
        if head == "attest" and not rest and method == "POST":
            try:
                body = await read_body(request)
            except BodyTooLarge as exc:
                pending = self.core.sessions.peek(cookie)
                if pending is not None:
                    await self.core.sessions.spend(pending)
                await self.core.reject(pending, exc, evidence=None)
                raise
            token, session = await self.core.attest(cookie, body)
            return self._with_cookie(web.Response(body=token.model_dump_json().encode(), content_type=JSON),
                                     session.cookie)
        if head == "resource":
            if method == "GET":
                jwe = await self.releaser.release(rest, session_id=cookie, bearer=_bearer(request))
                return web.Response(body=jwe.model_dump_json().encode(), content_type=JSON)
            if method in ("PUT", "POST"):
                await self.admin.set_resource(auth, rest, await read_body(request))
                return web.Response(status=200)
            if method == "DELETE":
                await self.admin.delete_resource(auth, rest)
                return web.Response(status=200)
        if head == "attestation-policy" and not rest and method == "POST":
            return self._json(await self.admin.set_attestation_policy(auth, await read_body(request)))
        if head == "resource-policy" and not rest:
            if method == "POST":
                return self._json(await self.admin.set_resource_policy(auth, await read_body(request)))
            if method == "GET":
                return self._json(self.admin.list_resource_policies(auth))
        if head == "reference-value":
            scope = request.query.get("scope") or None
            if method == "POST" and not rest:
                return self._json(await self.admin.set_reference_values(auth, await read_body(request), scope))
            if method == "GET" and rest:
                return self._json(self.admin.get_reference_value(auth, rest, scope))
        raise InvalidResourcePath(f"{method} /kbs/v0/{tail[:200]} is not a KBS endpoint")

    def _with_cookie(self, response: web.Response, session_id: str) -> web.Response:
        expires = datetime.now(UTC) + timedelta(seconds=self.core.sessions.timeout_s)
        # The header aiohttp's set_cookie writes for these attributes, written directly: the value
        # is base64url (never quoted), and SimpleCookie's quoting pass over a ~3 KiB sealed
        # session costs more than the rest of the response.
        response.headers.add(
            "Set-Cookie", f"{COOKIE}={session_id}; expires={expires.strftime('%a, %d %b %Y %H:%M:%S GMT')}; Path=/")
        return response

    @staticmethod
    def _json(value: object) -> web.Response:
        return web.Response(body=to_json(value), content_type=JSON)
