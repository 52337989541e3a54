"""``ccpipe events``, ``status`` and ``k8s manifest`` with the services stopped: they read the local
audit log, say so on stderr (with the age of its last event), and print what they printed live.

The trail is real: events signed by their components' keys, published on a real nats-server and
logged by the running audit log; then the server is stopped and the commands run again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from ccpipe.pipeline.audit.service import running_audit_log
from ccpipe.pipeline.bus import EventPublisher, connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from tests.audit_journeys import Names, journey

pytestmark = pytest.mark.integration

DONE, DENIED = Names(1).workload_id, Names(9).workload_id
REPO = Path(__file__).resolve().parents[4]


@dataclass
class Runs:
    """The outputs of each command, with the services running and after they stopped."""

    live: dict[str, subprocess.CompletedProcess[str]]
    offline: dict[str, subprocess.CompletedProcess[str]]


COMMANDS = {
    "events": ["events", "--json"],
    "events-table": ["events", "--workload", DENIED],
    "status": ["status", DONE, "--json"],
    "status-denied": ["status", DENIED],
    "manifest": ["k8s", "manifest", DONE, "--kbs-url", "https://kbs.example"],
}


def _ccpipe(data_dir: Path, nats_url: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCPIPE_DATA_DIR": str(data_dir), "CCPIPE_NATS_URL": nats_url}
    env.pop("CCPIPE_KBS_URL", None)
    return subprocess.run([sys.executable, "-m", "ccpipe", *argv], capture_output=True, text=True, env=env,
                          timeout=60, cwd=REPO)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("offline-reads")
    nats = EmbeddedNats(root / "nats").start()
    data_dir = root / "data"
    try:
        settings = load_settings(data_dir=data_dir, nats_url=nats.url)

        async def fill() -> None:
            nc = await connect(nats.url, name="fill")
            js = nc.jetstream()
            await provision_stream(js)
            pub = EventPublisher(js, signer=event_signer(data_dir))
            async with running_audit_log(settings, nats.url) as svc:
                last = 0
                for e in [*journey(1), *journey(9, denied=True)]:
                    last = (await pub.publish(e)).seq
                await svc.wait_logged(last)
            await nc.close()

        asyncio.run(fill())
        live = {name: _ccpipe(data_dir, nats.url, argv) for name, argv in COMMANDS.items()}
    finally:
        nats.stop()
    offline = {name: _ccpipe(data_dir, nats.url, argv) for name, argv in COMMANDS.items()}
    yield Runs(live, offline)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_with_the_services_stopped_each_command_prints_what_it_printed_live(runs: Runs, name: str) -> None:
    live, offline = runs.live[name], runs.offline[name]
    # a workload whose key the KBS denied is a refused one: status says so with exit 1, live and offline
    assert live.returncode == (1 if name == "status-denied" else 0), live.stderr
    assert "local audit index" not in live.stderr
    assert (offline.returncode, offline.stdout) == (live.returncode, live.stdout)
    command = " ".join(COMMANDS[name][:2] if name == "manifest" else COMMANDS[name][:1])
    first = offline.stderr.splitlines()[0]
    assert first.startswith(f"ccpipe {command}: no running services (")
    assert "reading the local audit index " in first and "index.sqlite instead (its last event occurred " in first


def test_the_offline_output_is_the_real_trail(runs: Runs) -> None:
    lines = [json.loads(line) for line in runs.offline["events"].stdout.splitlines()]
    expected = [*journey(1), *journey(9, denied=True)]  # fresh ids each call: compare what they say
    assert [e["type"] for e in lines] == [json.loads(e.canonical_bytes())["type"] for e in expected]
    assert [e["seq"] for e in lines] == list(range(1, len(expected) + 1))
    assert all("flag" not in e for e in lines)  # every signature checked against the keyring, all valid
    assert json.loads(runs.offline["status"].stdout)["state"] == "workload.exited"
    assert "key.denied" in runs.offline["status-denied"].stdout
    manifest = json.loads(runs.offline["manifest"].stdout)
    assert manifest["kind"] == "Pod" and Names(1).image in json.dumps(manifest)


def test_with_nothing_logged_either_the_error_stays(tmp_path: Path) -> None:
    out = _ccpipe(tmp_path / "empty", "nats://127.0.0.1:9", ["status", DONE])
    assert out.returncode != 0 and "local audit index" not in out.stderr
    assert not (tmp_path / "empty" / "audit" / "index.sqlite").exists()


def test_events_json_lines_validate_against_the_exported_schema(runs: Runs, tmp_path: Path) -> None:
    """Live and offline, every ``ccpipe events --json`` line is valid under ``events-line.schema.json``
    as ``ccpipe schema export`` writes it (extra ``seq`` and all)."""
    exported = _ccpipe(tmp_path / "data", "nats://127.0.0.1:9", ["schema", "export", str(tmp_path / "schemas")])
    assert exported.returncode == 0, exported.stderr
    schema = json.loads((tmp_path / "schemas" / "events-line.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for mode in (runs.live, runs.offline):
        lines = [json.loads(line) for line in mode["events"].stdout.splitlines()]
        assert len(lines) == len(journey(1)) + len(journey(9, denied=True))
        for line in lines:
            validator.validate(line)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**lines[0], "specversion": "0.3"})
