"""Bad input meets one sentence with a hint and the documented exit code, never a traceback.

Each case runs the real command, as a user would, and was a traceback (or a hang) before.
Exit codes (README, ``ccpipe.pipeline.cli.main``): 2 bad input, 3 configuration or a damaged
data directory, 4 a service did not answer, 141 stdout closed early.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli import CCPIPE, GOOD_SPEC, ccpipe, make_repo, services

pytestmark = pytest.mark.integration
__all__ = ["services"]  # the fixture, shared with test_cli
REPO_ROOT = Path(__file__).resolve().parents[2]


def refused(r: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> str:
    """Assert the command failed with ``exit_code`` and one line on stderr naming ``words``."""
    assert r.returncode == exit_code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert ": " in lines[0].split(": ", 1)[1], f"no hint after the message: {lines[0]}"
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_build_into_an_existing_file(tmp_path: Path) -> None:
    _, work = make_repo(tmp_path, GOOD_SPEC)
    (tmp_path / "afile").write_text("mine\n")
    refused(ccpipe(tmp_path / "d", "build", str(work), "--out", str(tmp_path / "afile")), 2,
            "--out", "is a file, not a directory")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_build_of_a_deeply_nested_spec(tmp_path: Path) -> None:
    _, work = make_repo(tmp_path, GOOD_SPEC + "[deep]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(ccpipe(tmp_path / "d", "build", str(work), "--out", str(tmp_path / "o")), 2, "nests", "too deeply")


def test_schema_export_into_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    refused(ccpipe(tmp_path / "d", "schema", "export", str(tmp_path / "afile")), 2, "is a file, not a directory")


def test_keys_generate_into_a_missing_directory(tmp_path: Path) -> None:
    r = ccpipe(tmp_path / "d", "keys", "generate", "--output-key-prefix", str(tmp_path / "missing" / "k"))
    refused(r, 2, str(tmp_path / "missing"), "does not exist", "mkdir")


@pytest.mark.parametrize("workload", ["../../etc", "a.b", "*"])
def test_status_of_a_malformed_workload_id(tmp_path: Path, workload: str) -> None:
    # Refused before any service is asked: the id could not name a workload whatever runs.
    refused(ccpipe(tmp_path / "d", "status", workload), 2, repr(workload), "is not a workload id")
    refused(ccpipe(tmp_path / "d", "events", "--workload", workload), 2, "is not a workload id")


def test_kbs_serve_on_a_busy_port(tmp_path: Path, listening: int) -> None:
    r = ccpipe(tmp_path / "d", "kbs", "serve", "--port", str(listening),
               CCPIPE_NATS_URL=f"nats://127.0.0.1:{closed_port()}")
    refused(r, 3, f"127.0.0.1:{listening}", "in use", "--port")


def test_events_with_nats_on_a_closed_port_exits_4_promptly(tmp_path: Path) -> None:
    start = time.monotonic()
    r = ccpipe(tmp_path / "d", "events", CCPIPE_NATS_URL=f"nats://127.0.0.1:{closed_port()}")
    refused(r, 4, "cannot reach NATS")
    assert time.monotonic() - start < 30


def test_damaged_endpoints_file_is_a_damaged_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "endpoints.json").write_bytes(b'{"nats_url": \xff')
    refused(ccpipe(data, "events"), 3, "endpoints.json is damaged")


def test_damaged_audit_store_is_a_damaged_data_directory(tmp_path: Path) -> None:
    (tmp_path / "d" / "audit").mkdir(parents=True)
    (tmp_path / "d" / "audit" / "index.sqlite").write_bytes(b"not a database" * 100)
    refused(ccpipe(tmp_path / "d", "audit", "verify", "--source", "store"), 3, "cannot open audit store")


def test_running_services_with_a_damaged_key_and_a_closed_stdout(services: Path, tmp_path: Path) -> None:
    _, work = make_repo(tmp_path, GOOD_SPEC)
    assert ccpipe(services, "submit", str(work)).returncode == 0
    # `ccpipe events | head`: the reader goes away; ccpipe stops quietly, as Unix tools do.
    proc = subprocess.Popen([*CCPIPE, "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "CCPIPE_DATA_DIR": str(services)})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    assert proc.wait(60) == 141
    assert proc.stderr.read() == b""
    # A list of servers, the first of them down: the next one is used.
    nats_url = next(line.split()[1] for line in ccpipe(services, "endpoints").stdout.splitlines()
                    if line.strip().startswith("NATS"))
    listed = ccpipe(services, "events", "--json", CCPIPE_NATS_URL=f"nats://127.0.0.1:{closed_port()},{nats_url}")
    assert listed.returncode == 0 and '"type": "dev.cdevents.build.queued.0.2.0"' in listed.stdout, listed.stderr
    # A damaged key file of the data directory: exit 3, not 1.
    key = services / "keys" / "events" / "submit.key"
    key.write_bytes(b"garbage")
    refused(ccpipe(services, "submit", str(work)), 3, str(key))


def test_bench_help_prints_usage() -> None:
    r = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "registry_push.py"), "--help"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
