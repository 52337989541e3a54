"""The audit API's limits against the real server on loopback: half-sent requests are cut off
within their timeout (raw sockets), and a flood of heavy queries is answered 503 with
``Retry-After`` at once while light requests stay fast."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from ccpipe.pipeline.audit.http.app import ReaderThread, audit_app
from ccpipe.pipeline.audit.http.limits import ApiLimits, listen
from ccpipe.pipeline.audit.http.models import EventPage
from ccpipe.pipeline.audit.http.reader import AuditReader
from ccpipe.pipeline.audit.http.service import open_store, serve_reader
from ccpipe.pipeline.audit.query import EventFilter
from tests.unit.pipeline.audit.http.audit_http_trail import Trail, build_trail

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.6
"""Header and body timeout of the served API in these tests."""
HEAVY_S = 0.3
"""How long each heavy query takes in the flood test."""
CAP = 4
"""Heavy queries admitted at once in the flood test."""


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    return build_trail(tmp_path / "data")


@asynccontextmanager
async def served(trail: Trail, open_reader: Callable[[], AuditReader] | None = None) -> AsyncIterator[str]:
    limits = ApiLimits(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S, heavy_queries=CAP)
    async with serve_reader(open_reader or (lambda: open_store(trail.settings)), limits) as base:
        yield base


async def _connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    return await asyncio.open_connection(url.hostname, url.port)


async def _seconds_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Seconds until the server closes the connection (read returns EOF); fails after 5 s."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass
    finally:
        writer.close()
    return time.monotonic() - start


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status line, headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    return status.encode(), headers, await reader.readexactly(int(headers["content-length"]))


@pytest.mark.parametrize("sent", [b"GET /api/v1/checkp", b"GET /api/v1/checkpoint HTTP/1.1\r\nHost: x\r\n"],
                         ids=["half a request line", "headers without their end"])
async def test_a_half_sent_request_head_is_cut_off(trail: Trail, sent: bytes) -> None:
    async with served(trail) as base:
        reader, writer = await _connect(base)
        writer.write(sent)
        closed_after = await _seconds_until_closed(reader, writer)
    assert TIMEOUT_S * 0.8 <= closed_after < TIMEOUT_S + 1.5


async def test_trickling_a_head_does_not_extend_the_deadline(trail: Trail) -> None:
    async with served(trail) as base:
        reader, writer = await _connect(base)
        writer.write(b"GET /api/v1/checkpoint HTTP/1.1\r\n")

        async def trickle() -> None:
            for i in range(50):  # one header every 0.1 s: 5 s if nothing stopped it
                await asyncio.sleep(0.1)
                writer.write(f"X-{i}: y\r\n".encode())

        trickling = asyncio.create_task(trickle())
        try:
            closed_after = await _seconds_until_closed(reader, writer)
        finally:
            trickling.cancel()
    assert closed_after < TIMEOUT_S + 1.5


CHECKPOINT = b"GET /api/v1/checkpoint HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(("request_", "then"), [
    (CHECKPOINT + b"\r\n", b"GET /api/v1/checkpoint HTTP/1.1\r\nHo"),
    (CHECKPOINT + b"Content-Length: 1000\r\n\r\n0123456789", b""),
    (CHECKPOINT + b"\r\n", b""),
], ids=["half a second request", "half a body", "idle keep-alive"])
async def test_a_request_is_answered_then_a_stalled_connection_cut_off(
        trail: Trail, request_: bytes, then: bytes) -> None:
    async with served(trail) as base:
        reader, writer = await _connect(base)
        await asyncio.sleep(TIMEOUT_S / 3)  # a slow but timely client is served
        writer.write(request_)
        status, _, note = await _read_response(reader)
        assert status.startswith(b"HTTP/1.1 200") and b"ccpipe-audit" in note
        writer.write(then)
        closed_after = await _seconds_until_closed(reader, writer)
    assert TIMEOUT_S * 0.8 <= closed_after < TIMEOUT_S + 1.5


async def test_the_first_request_deadline_holds_without_aiohttp_keepalive(trail: Trail) -> None:
    # aiohttp releases up to 3.14.3 start no timer before a connection's first request: the
    # deadline must not depend on the one newer releases start.
    app = audit_app(ReaderThread(lambda: open_store(trail.settings)), ReaderThread(lambda: open_store(trail.settings)))
    runner = web.AppRunner(app, keepalive_timeout=3600)
    await runner.setup()
    try:
        server = await listen(runner, "127.0.0.1", 0, ApiLimits(TIMEOUT_S, TIMEOUT_S, CAP))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await _connect(f"http://127.0.0.1:{port}")
        writer.write(b"GET /api/v1/checkpoint HTTP/1.1\r\nHo")
        closed_after = await _seconds_until_closed(reader, writer)
        server.close()
    finally:
        await runner.cleanup()
    assert closed_after < TIMEOUT_S + 1.5


class SlowEvents(AuditReader):
    """An :class:`AuditReader` whose event listing takes ``delay_s`` (a large query)."""

    delay_s = HEAVY_S

    def events(self, f: EventFilter) -> EventPage:
        time.sleep(self.delay_s)
        return super().events(f)


def slow_reader(trail: Trail, delay_s: float) -> Callable[[], AuditReader]:
    """Opens readers over ``trail`` whose event listing takes ``delay_s``."""

    def open_slow() -> AuditReader:
        store = trail.store()
        reader = SlowEvents(store, store, trail.signer.verifier.vkey)
        reader.delay_s = delay_s
        return reader

    return open_slow


async def test_a_request_slower_than_the_header_timeout_is_answered(trail: Trail) -> None:
    # The deadline is for receiving a request, not for answering it.
    async with served(trail, slow_reader(trail, TIMEOUT_S * 2)) as base, aiohttp.ClientSession() as session, \
            session.get(base + "/api/v1/events?limit=5") as resp:
        assert resp.status == 200 and len((await resp.json())["events"]) == 5


async def test_a_flood_of_heavy_queries_is_refused_quickly_and_light_requests_stay_fast(trail: Trail) -> None:
    async with served(trail, slow_reader(trail, HEAVY_S)) as base, aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, float, str | None, bytes]:
            start = time.monotonic()
            async with session.get(base + path) as resp:
                body = await resp.read()
                return resp.status, time.monotonic() - start, resp.headers.get("Retry-After"), body

        flood = [asyncio.create_task(get("/api/v1/events?limit=50")) for _ in range(40)]
        await asyncio.sleep(0.05)  # the flood is queued: the heavy lane is full
        checkpoint_status, checkpoint_s, _, _ = await get("/api/v1/checkpoint")
        answers = await asyncio.gather(*flood)

    queue_s = CAP * HEAVY_S  # what waiting behind the admitted heavy queries costs
    assert checkpoint_status == 200
    assert checkpoint_s < queue_s / 2  # not queued behind them
    done = [a for a in answers if a[0] == 200]
    busy = [a for a in answers if a[0] == 503]
    assert len(done) + len(busy) == len(answers)
    assert CAP <= len(done) < len(answers) / 2 and busy
    # Refused without waiting, with the API's error body and a time to come back.
    assert max(seconds for _, seconds, _, _ in busy) < queue_s / 2
    for _, _, retry_after, body in busy:
        assert retry_after == "1"
        err = json.loads(body)["error"]
        assert err["code"] == "audit.api.busy" and "heavy queries" in err["message"] and err["hint"]
    # No admitted query waited behind more than the CAP - 1 queued before it.
    assert max(seconds for _, seconds, _, _ in done) < queue_s + 1.0
