"""Limits that keep the audit API answering while some clients are slow or greedy.

* **Request heads.** A connection has ``header_timeout_s`` to send a whole request head, counted
  from connecting or from its previous response, however it trickles its bytes; then it is
  closed. After a response this is aiohttp's ``keepalive_timeout`` (its deadline is fixed when
  the response ends and does not move as bytes arrive). aiohttp 3.12 to 3.14.3 (at least) start no
  timer for a connection's first request, so :class:`FirstRequestDeadline` wraps each connection's
  protocol and closes it unless :func:`first_request_arrived` saw a request in time.
* **Request bodies.** The API is read-only and its handlers never read a body; after answering,
  aiohttp reads what is left of one for at most its ``lingering_time`` (``body_timeout_s``),
  then closes the connection.
* **Heavy queries** (event lists, journeys, searches) run on their own reader thread, which
  admits at most ``heavy_queries`` at once, running or queued; beyond that a request is answered
  503 with ``Retry-After`` at once (:class:`~.errors.Busy`). Light requests (checkpoint, one
  event, its proof) have their own thread, so a flood of heavy ones does not delay them.

Imports aiohttp and ``schemas`` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ccpipe.schemas.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiLimits:
    """The limits of one served API (see the module docstring)."""

    header_timeout_s: float
    body_timeout_s: float
    heavy_queries: int

    @classmethod
    def of(cls, settings: Settings) -> ApiLimits:
        """The limits ``settings`` configure (``CCPIPE_AUDIT_API_*``)."""
        return cls(header_timeout_s=settings.audit_api_header_timeout_s,
                   body_timeout_s=settings.audit_api_body_timeout_s,
                   heavy_queries=settings.audit_api_heavy_queries)

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`aiohttp.web.AppRunner` that enforce the timeouts."""
        return {"keepalive_timeout": self.header_timeout_s, "lingering_time": self.body_timeout_s}


class FirstRequestDeadline(asyncio.Protocol):
    """One connection's aiohttp protocol, closed ``timeout_s`` after connecting unless a request
    has reached the application by then (:meth:`request_arrived`). Everything else is passed on."""

    def __init__(self, inner: asyncio.Protocol, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the deadline, then hand the connection to aiohttp."""
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire)
        self._inner.connection_made(transport)

    def request_arrived(self) -> None:
        """A whole request head was read: from here on aiohttp's own timeouts apply."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            log.info("audit API: closing a connection from %s that sent no whole request in %g s",
                     self._transport.get_extra_info("peername"), self._timeout_s)
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        """Pass ``data`` to aiohttp."""
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Pass the end of input to aiohttp."""
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        """Pass flow control to aiohttp."""
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Pass flow control to aiohttp."""
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline and tell aiohttp."""
        self.request_arrived()
        self._transport = None
        self._inner.connection_lost(exc)


@web.middleware
async def first_request_arrived(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
    """Stop the connection's :class:`FirstRequestDeadline` (if it has one): a request arrived."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if isinstance(guard, FirstRequestDeadline):
        guard.request_arrived()
    return await handler(request)


async def listen(runner: web.AppRunner, host: str, port: int, limits: ApiLimits) -> asyncio.Server:
    """Serve ``runner`` (set up) on ``host:port`` with each connection under a
    :class:`FirstRequestDeadline`. Close the returned server before cleaning up the runner.
    Raises ``OSError`` if ``host:port`` cannot be bound."""
    protocols = runner.server
    if protocols is None:
        raise RuntimeError("set the runner up before listening")
    return await asyncio.get_running_loop().create_server(
        lambda: FirstRequestDeadline(protocols(), limits.header_timeout_s), host, port)
