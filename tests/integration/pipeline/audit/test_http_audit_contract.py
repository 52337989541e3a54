"""The audit API against its own OpenAPI document, checked by schemathesis (a bounded run).

schemathesis reads ``/openapi.json`` of a live API over a real trail, generates requests from
every operation's parameters (valid and invalid ones, edge values such as the largest integer),
and checks each answer: no 5xx, a status the document lists, its media type, and a body that
validates against the declared schema. The audit service's status is kept fresh meanwhile, so
``/readyz`` answers 200 as it does in production (its documented 503 is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.liveness import AuditState, AuditStatus, status_path, write_status
from ccpipe.pipeline.services import Endpoints
from tests.unit.pipeline.audit.http.audit_http_trail import build_trail

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 25
"""Cases per operation and phase: the whole run takes about 20 s on a shared 2-core machine."""


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
                "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--workers", "2", "--seed", "1818",
                "--generation-database", "none", "--no-color", "--request-timeout", "10",
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    # Every operation schemathesis found in the document was exercised (none filtered out).
    assert re.search(r"Operations: +(\d+) selected / \1 total", report), report
    assert "No issues found" in report, report
