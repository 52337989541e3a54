"""The audit API and page over the live trail: events published on a real nats-server, logged
and checkpointed by the audit service, served by ``serve_audit_api`` — the ``ccpipe up`` wiring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.offline import verify_proof_offline
from ccpipe.pipeline.audit.service import serve_audit_log
from ccpipe.pipeline.bus import EventPublisher, connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.envelope import Event
from tests.audit_journeys import Names, journey

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def live(tmp_path: Path, own_nats: EmbeddedNats) -> AsyncIterator[tuple[list[Event], Endpoints]]:
    """The audit log and API running over a fresh stream holding one signed journey."""
    settings = load_settings(data_dir=tmp_path / "data", nats_url=own_nats.url)
    nc = await connect(own_nats.url, name="audit-http-tests")
    await provision_stream(nc.jetstream())
    eps = Endpoints(nats_url=own_nats.url)
    try:
        async with serve_audit_log(settings, eps) as eps, serve_audit_api(settings, eps) as eps:
            pub = EventPublisher(nc.jetstream(), signer=event_signer(settings.data_dir))
            events = journey(3)
            for e in events:
                await pub.publish(e)
            yield events, eps
    finally:
        await nc.close()


async def _proof_when_covered(session: aiohttp.ClientSession, url: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url) as resp:
            if resp.status == 200:
                doc: dict[str, object] = await resp.json()
                return doc
            assert resp.status in (404, 409), await resp.text()  # not indexed / not checkpointed yet
        assert time.monotonic() < deadline, f"{url} was not covered by a checkpoint within {timeout} s"
        await asyncio.sleep(0.2)


async def test_live_events_get_proofs_that_verify_offline_and_in_the_page(
        live: tuple[list[Event], Endpoints]) -> None:
    events, eps = live
    assert eps.audit_api_url is not None
    async with aiohttp.ClientSession() as session:
        last = await _proof_when_covered(session, f"{eps.audit_api_url}/api/v1/events/{events[-1].id}/proof")
        checked = verify_proof_offline(last)
        assert checked.event_id == events[-1].id
        # The installation's own origin, <host>/ccpipe/<id>, which is also the log key's name.
        assert checked.origin.split("/")[1] == "ccpipe" and str(last["log_public_key"]).startswith(checked.origin + "+")
        async with session.get(f"{eps.audit_api_url}/api/v1/workloads/{Names(3).workload_id}/journey") as resp:
            j = await resp.json()
        assert [e["event_id"] for e in j["events"]] == [e.id for e in events]
        assert {e["signature"] for e in j["events"]} == {"valid"}  # signed by their components' registered keys
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{eps.audit_api_url}/#/workload/{Names(3).workload_id}")
            summary = page.locator("#proof-summary.proof.verified, #proof-summary.proof.failed")
            await summary.wait_for(timeout=20_000)
            assert await summary.inner_text() == "all 11 proofs verified"
            statuses = await page.locator("li.stage").evaluate_all("els => els.map(e => e.dataset.status)")
            assert statuses == ["done"] * 9
        finally:
            await browser.close()
