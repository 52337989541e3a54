"""Floods of refused admin calls and of ``/auth`` leave one ``kbs.refused`` event per client and interval."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ccpipe.pipeline.reader import read_events
from ccpipe.schemas.events import EventType, KbsRequestsRefused
from ccpipe.stages.attest.kbs.audit import ADMIN_WORKLOAD, UNSCOPED_WORKLOAD
from ccpipe.stages.attest.kbs.refusals import RefusalTrail, Tally
from tests.integration.stages.attest import test_kbs_rcar as rcar
from tests.integration.stages.attest.test_kbs_rcar import Harness

pytestmark = pytest.mark.integration
kbs = rcar.kbs


async def refused(kbs: Harness, workload: str) -> list[KbsRequestsRefused]:
    events = [e.event for e in await read_events(kbs.js, workload) if e.event is not None]
    return [e.payload for e in events if e.type == EventType.KBS_REFUSED and isinstance(e.payload, KbsRequestsRefused)]


async def post_from(kbs: Harness, address: str, path: str, count: int, **kw: Any) -> list[int]:
    """``count`` POSTs to ``/kbs/v0/<path>`` from the loopback ``address``; their statuses."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = []
        for _ in range(count):
            async with http.post(f"{kbs.url}/kbs/v0/{path}", **kw) as resp:
                statuses.append(resp.status)
        return statuses


async def test_refused_admin_calls_are_one_event_per_client(kbs: Harness) -> None:
    before = len(await refused(kbs, ADMIN_WORKLOAD))
    forged = {"Authorization": "Bearer not.a.token"}
    assert set(await post_from(kbs, "127.0.0.1", "attestation-policy", 200, headers=forged, data=b"{}")) == {401}
    assert set(await post_from(kbs, "127.0.0.2", "resource/ccpipe/x/image-key", 3, data=b"k")) == {401}
    assert len(await refused(kbs, ADMIN_WORKLOAD)) == before  # nothing yet: the interval has not ended
    await kbs.kbs.http.refusals.flush(all_intervals=True)
    summaries = (await refused(kbs, ADMIN_WORKLOAD))[before:]
    assert sorted((s.client, s.kind, s.count) for s in summaries) == [("127.0.0.1", "admin", 200),
                                                                      ("127.0.0.2", "admin", 3)]
    assert all(s.reasons == {"kbs.admin.denied": s.count} for s in summaries)


async def test_an_auth_flood_is_cut_at_the_rate_and_summarised(kbs: Harness, workload_id: str) -> None:
    kbs.kbs.http.refusals.auth_per_interval = 5
    body = {"version": "0.4.0", "tee": "snp", "extra-params": {"ccpipe-workload": workload_id}}
    statuses = await post_from(kbs, "127.0.0.3", "auth", 50, json=body)
    assert statuses == [200] * 5 + [429] * 45
    challenged = [e for e in await read_events(kbs.js, workload_id) if e.event is not None]
    assert len(challenged) == 5  # only the admitted handshakes are events of their own
    assert await post_from(kbs, "127.0.0.4", "auth", 1, json=body) == [200]  # another client has its own rate
    await kbs.kbs.http.refusals.flush(all_intervals=True)
    (summary,) = [s for s in await refused(kbs, UNSCOPED_WORKLOAD) if s.client == "127.0.0.3"]
    assert (summary.kind, summary.count, summary.reasons) == ("auth", 45, {"kbs.auth.rate": 45})


async def test_a_client_gets_one_summary_per_interval() -> None:
    now = [0.0]
    stored: list[tuple[str, str, int]] = []

    async def summarise(client: str, kind: str, tally: Tally, interval_s: float) -> None:
        stored.append((client, kind, tally.count))

    trail = RefusalTrail(summarise, interval_s=60, clock=lambda: now[0])
    for _ in range(200):
        trail.note("10.0.0.1", "admin", "kbs.admin.denied")
    trail.note("10.0.0.2", "admin", "kbs.admin.denied")
    now[0] = 30
    assert await trail.flush() == 0 and stored == []  # still inside the interval
    now[0] = 61
    assert await trail.flush() == 2
    assert sorted(stored) == [("10.0.0.1", "admin", 200), ("10.0.0.2", "admin", 1)]
    trail.note("10.0.0.1", "admin", "kbs.admin.denied")  # a new interval, a new summary
    assert await trail.flush(all_intervals=True) == 1 and stored[-1] == ("10.0.0.1", "admin", 1)
