"""The audit API against its own OpenAPI document, checked by schemathesis (a bounded run).

schemathesis reads ``/openapi.json`` of a live API over a real trail, generates requests from
every operation's parameters (valid and invalid ones, edge values such as the largest integer),
and runs every check it has (its default): no 5xx, a status the document lists, its media type
and headers, a body that validates against the declared schema, schema-violating requests
refused, schema-valid ones accepted, undeclared methods answered 405. The two refusals the
document announces but OpenAPI cannot express (``since`` after ``until``, a consistency proof
``from`` beyond ``to``) are let through by ``audit_contract_hooks.py``, only when the request
breaks that rule. The audit service's status is kept fresh meanwhile, so ``/readyz`` answers 200
as it does in production (its documented 503 is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.liveness import AuditState, AuditStatus, status_path, write_status
from ccpipe.pipeline.services import Endpoints
from tests.unit.pipeline.audit.http.audit_http_trail import build_trail

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
"""Cases per operation and phase: the whole run takes about 30 s on a shared 2-core machine."""
HOOKS = Path(__file__).with_name("audit_contract_hooks.py")


async def _report_leading(path: Path) -> None:
    while True:
        write_status(path, AuditStatus(AuditState.LEADING, holder="test:1:a", logged_seq=21, stream_last_seq=21))
        await asyncio.sleep(1)


@pytest.mark.timeout(150)
async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    trail = build_trail(tmp_path / "data")
    reporter = asyncio.create_task(_report_leading(status_path(trail.settings.data_dir)))
    try:
        async with serve_audit_api(trail.settings, Endpoints(nats_url="nats://127.0.0.1:4222")) as eps:
            assert eps.audit_api_url is not None
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "schemathesis.cli", "run", f"{eps.audit_api_url}/openapi.json",
                "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--workers", "2", "--seed", "1818",
                "--generation-database", "none", "--no-color", "--request-timeout", "10",
                cwd=tmp_path, env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    # Every operation schemathesis found in the document was exercised (none filtered out).
    assert re.search(r"Selected: +(\d+)/\1\b", report) or re.search(r"Operations: +(\d+) selected / \1 total",
                                                                     report), report
    assert "No issues found" in report, report
    # every phase ran (the document has no examples to replay)
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ +{phase}", report), (phase, report)


def test_the_hook_lets_through_only_a_request_that_breaks_the_rule() -> None:
    from tests.integration.pipeline.audit.audit_contract_hooks import breaks_a_documented_cross_parameter_rule as breaks

    later, earlier = "2026-01-02T00:00:00Z", "2026-01-01T00:00:00+00:00"
    said = f"since {later} is after until {earlier}"
    assert breaks("/api/v1/overview", {"since": later, "until": earlier}, said)
    assert breaks("/api/v1/events", {"since": later, "until": earlier, "limit": 3}, said)
    assert not breaks("/api/v1/events", {"since": earlier, "until": later}, f"since {earlier} is after until {later}")
    assert not breaks("/api/v1/events", {"since": later, "until": earlier}, "limit 0 is below 1")
    assert not breaks("/api/v1/workloads/w/journey", {"since": later, "until": earlier}, said)
    refusal = "no consistency proof from {} to {}: from must not be larger than to (a log only grows)"
    assert breaks("/api/v1/consistency", {"from": 9, "to": 3}, refusal.format(9, 3))
    assert breaks("/api/v1/consistency", {"from": 99}, refusal.format(99, 21))  # to: the latest checkpoint's
    assert not breaks("/api/v1/consistency", {"from": 9, "to": 30}, refusal.format(9, 3))
    assert not breaks("/api/v1/consistency", {"from": 3, "to": 9}, refusal.format(3, 9))
    assert not breaks("/api/v1/consistency", {"from": 9, "to": 3}, "tree size 3 is not a tree size")
