"""The CLI and the git trigger against real servers, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from ccpipe.enclave_runner.tee import hardware_backend
from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.cli.events import EventsLine
from ccpipe.pipeline.nats_auth import AUDIT_CHECKPOINTS, AUDIT_STATUS, KBS_SERVED
from ccpipe.pipeline.services import embedded_services
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.cloudevents import CLOUDEVENT_TYPES, CloudEvent
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import PAYLOAD_MODELS, EventType
from ccpipe.schemas.nodes import NodeChallenge, NodeJoinReply, NodeJoinRequest

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "ccpipe"]
GOOD_SPEC = """[workload]
name = "hello"
[build]
entrypoint = ["/app/hello.sh"]
[[build.copy]]
src = "app/"
dst = "/app/"
[tee]
types = ["snp"]
allow_emulated = true
"""


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=True)


def ccpipe(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CCPIPE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CCPIPE_DATA_DIR": str(data_dir), **env})


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Path]:
    """Embedded servers for one test, as `ccpipe up` would run them; yields the data dir."""
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    with embedded_services(settings) as eps:
        asyncio.run(provision_as_admin(settings, eps.nats_url))
        yield data


def make_repo(root: Path, spec: str) -> tuple[Path, Path]:
    bare, work = root / "r.git", root / "r"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "init", "-q", "-b", "main", str(work))
    (work / "app").mkdir()
    (work / "app" / "hello.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "ccpipe.toml").write_bytes(spec.encode(errors="surrogateescape"))  # "\udcff" writes the byte 0xff
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "c1")
    git(work, "remote", "add", "origin", str(bare))
    return bare, work


def events(data_dir: Path, workload: str | None = None) -> list[dict[str, object]]:
    """``ccpipe events --json``: each line validates against the exported event schema (a CloudEvent)."""
    args = ["events", "--json"] + (["--workload", workload] if workload else [])
    out = ccpipe(data_dir, *args)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    for line in lines:
        jsonschema.validate(line, CloudEvent.model_json_schema(by_alias=True))
        jsonschema.validate(line, EventsLine.model_json_schema(by_alias=True))
    return lines


def test_push_to_a_hooked_repository_submits(services: Path, tmp_path: Path) -> None:
    bare, work = make_repo(tmp_path, GOOD_SPEC)
    r = ccpipe(services, "hook", "install", str(bare))
    assert r.returncode == 0 and "post-receive" in r.stdout
    push = git(work, "push", "origin", "main")
    assert "ccpipe: submitted workload hello-" in push.stderr
    evs = events(services)
    assert [e["type"] for e in evs] == [CLOUDEVENT_TYPES[EventType.SUBMITTED]]
    payload = evs[0]["data"]
    assert isinstance(payload, dict)
    head = git(work, "rev-parse", "HEAD").stdout.strip()
    assert payload["new_commit"] == head and payload["ref"] == "refs/heads/main"
    assert payload["old_commit"] == "0" * 40 and payload["spec"]["workload"]["name"] == "hello"
    wl = str(evs[0]["subject"])
    status = ccpipe(services, "status", wl, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "submitted"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [('name = "hello"', "", "workload.name: required field is missing"),
     ("allow_emulated = true", "allow_emulated = 3", "tee.allow_emulated"),
     ('types = ["snp"]', 'types = ["tpm"]', "tee.types: item 0: unknown TEE type 'tpm'"),
     # Each of these once crashed the parser (a RecursionError, a UnicodeDecodeError) or got a hint about paths.
     ("[tee]", "[deep]\nx = " + "[" * 5000 + "]" * 5000 + "\n[tee]", "nests arrays or tables too deeply"),
     ('name = "hello"', 'name = "h\udcffllo"', "is not UTF-8 text"),
     ("[tee]", "#" + "x" * (1 << 20) + "\n[tee]", "is larger than 1 MiB")],
    ids=["missing-field", "wrong-type", "unknown-tee", "nested", "not-utf8", "1-MiB"],
)
def test_malformed_spec_is_one_failed_event_and_a_clear_message(
        services: Path, tmp_path: Path, old: str, new: str, field: str) -> None:
    bare, work = make_repo(tmp_path, GOOD_SPEC.replace(old, new))
    # By hand: the CLI names the field and exits 2.
    r = ccpipe(services, "submit", str(work))
    assert r.returncode == 2
    assert field in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    # Through the hook: the pusher sees the same sentence.
    assert ccpipe(services, "hook", "install", str(bare)).returncode == 0
    push = git(work, "push", "origin", "main")
    assert field in push.stderr
    evs = events(services)
    assert [e["type"] for e in evs] == ["dev.ccpipe.failed"] * 2, "nothing but failed events for a bad push"
    for e in evs:
        reason = e["data"]["reason"]  # type: ignore[index]
        assert reason["stage"] == "submit" and field in reason["message"] and reason["hint"]


def test_submit_outside_a_repository_is_a_clear_error(services: Path, tmp_path: Path) -> None:
    r = ccpipe(services, "submit", str(tmp_path))
    assert r.returncode == 2 and "git rev-parse" in r.stderr
    assert events(services) == []


def test_commands_without_running_services_say_what_to_do(tmp_path: Path) -> None:
    r = ccpipe(tmp_path / "empty", "events")
    assert r.returncode == 3
    assert "no ccpipe services are running" in r.stderr and "ccpipe up" in r.stderr


def test_hook_install_keeps_a_foreign_hook(tmp_path: Path) -> None:
    bare, _ = make_repo(tmp_path, GOOD_SPEC)
    (bare / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    r = ccpipe(tmp_path / "d", "hook", "install", str(bare))
    assert r.returncode == 2 and "--force" in r.stderr
    assert (bare / "hooks" / "post-receive").read_text() == "#!/bin/sh\necho mine\n"
    assert ccpipe(tmp_path / "d", "hook", "install", "--force", str(bare)).returncode == 0


def test_up_runs_until_interrupted_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen([*CCPIPE, "up"], env={**os.environ, "CCPIPE_DATA_DIR": str(data)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eps_file = data / "endpoints.json"
        deadline = time.monotonic() + 30
        while not eps_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert eps_file.exists(), "ccpipe up did not publish endpoints.json"
        eps = json.loads(ccpipe(data, "endpoints", "--json").stdout)
        assert eps["nats_url"].startswith("nats://127.0.0.1:") and eps["registry"].startswith("127.0.0.1:")
        # A second `up` on the same data directory is refused instead of corrupting the store.
        second = ccpipe(data, "up")
        assert second.returncode == 3 and "already runs" in second.stderr
        nats_pid = int(subprocess.run(["pgrep", "-f", str(data / "nats")], capture_output=True,
                                      text=True).stdout.split()[0])
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    if hardware_backend() is None:  # the embedded default says first that it accepts emulated evidence
        assert out.splitlines()[0] == (
            "emulated TEE evidence is accepted: this machine has no TEE; use --production to refuse it")
    assert not eps_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(nats_pid, 0)


def test_schema_export_writes_valid_json_schema(tmp_path: Path) -> None:
    r = ccpipe(tmp_path, "schema", "export", str(tmp_path / "s"))
    assert r.returncode == 0
    files = sorted((tmp_path / "s").glob("*.schema.json"))
    names = {f.name for f in files}
    assert {"event.schema.json", "workload-spec.schema.json", "payload.key.released.schema.json"} <= names
    assert len(files) == len(PAYLOAD_MODELS) + 4  # one per payload, the event, an events line, the spec, settings
    for f in files:
        jsonschema.Draft202012Validator.check_schema(json.loads(f.read_text()))
    # A real event validates against the exported envelope schema; a bad one does not.
    event_schema = json.loads((tmp_path / "s" / "event.schema.json").read_text())
    failed = Event(type="failed", workload_id="w-1", source=Source(component="t"),
                   payload={"reason": {"stage": "s", "code": "c", "message": "m"}})
    good = json.loads(failed.canonical_bytes())
    jsonschema.validate(good, event_schema)
    for bad in ({**good, "source": {}}, {**good, "type": "failed"}, {**good, "specversion": "0.3"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, event_schema)


ASYNCAPI_KEY = re.compile(r"^[A-Za-z0-9\.\-_]+$")
"""The AsyncAPI 3 pattern of component, channel and operation keys."""
ASYNCAPI_TOOLS = Path(__file__).parents[1] / "tools" / "asyncapi"


def test_asyncapi_lists_every_subject_and_event_type(tmp_path: Path) -> None:
    r = ccpipe(tmp_path, "asyncapi")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {f"ccpipe.evt.{{workload_id}}.{t.value}" for t in EventType} <= addresses
    assert {"ccpipe.audit.checkpoint", "ccpipe.kbs.auth", "ccpipe.kbs.attest", "ccpipe.kbs.resource",
            "ccpipe.nodes.challenge", "ccpipe.nodes.join.{instance}"} <= addresses
    # every subject a service answers or the audit log publishes, from the tables the permissions are
    # made of (a parameter stands for one token, as `*` does): a new one without a channel fails here
    as_patterns = {re.sub(r"\{[a-z_]+\}", "*", a) for a in addresses if a}
    served = {*KBS_SERVED, AUDIT_CHECKPOINTS, AUDIT_STATUS, *(f"ccpipe.evt.*.{t.value}" for t in EventType)}
    assert served <= as_patterns, served - as_patterns
    messages = doc["components"]["messages"]
    assert {t.value for t in EventType} <= set(messages)
    for etype in EventType:  # each message pins its CloudEvents type
        assert messages[etype.value]["payload"]["allOf"][1]["properties"]["type"]["const"] == CLOUDEVENT_TYPES[etype]
    for section in ("channels", "operations"):
        assert all(ASYNCAPI_KEY.match(k) for k in doc[section]), section
    for section in ("messages", "schemas"):
        assert all(ASYNCAPI_KEY.match(k) for k in doc["components"][section]), section
    received = {op["channel"]["$ref"] for op in doc["operations"].values() if op["action"] == "receive"}
    assert {"#/channels/kbs.resource", "#/channels/nodes.challenge", "#/channels/nodes.join"} <= received
    # node admission is request/reply: the evidence and the verdict carry the schemas' models
    schemas = doc["components"]["schemas"]
    for name, model in (("nodes.challenge.reply", NodeChallenge), ("nodes.join.request", NodeJoinRequest),
                        ("nodes.join.reply", NodeJoinReply)):
        assert messages[name]["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert model.__name__ in schemas
    assert doc["operations"]["kbs.receive.nodes.join"]["reply"]["channel"] == {"$ref": "#/channels/nodes.join.reply"}


def test_asyncapi_document_passes_the_official_parser(tmp_path: Path) -> None:
    if not (ASYNCAPI_TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        # the version and integrity hashes pinned in package-lock.json, nothing else
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ASYNCAPI_TOOLS,
                       check=True, capture_output=True, timeout=300)
    out = tmp_path / "asyncapi.json"
    assert ccpipe(tmp_path, "asyncapi", "--out", str(out)).returncode == 0
    r = subprocess.run(["node", "validate.mjs", str(out)], cwd=ASYNCAPI_TOOLS, capture_output=True, text=True,
                       timeout=120)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["parsed"], report
    assert report["errors"] == [] and report["warnings"] == [], report
