"""``ccpipe up --only nats,registry --cluster 3`` and one ``ccpipe serve`` process per component.

Every component runs in its own process against a three-node JetStream cluster (the data
directory is still shared: the event keys live there until components are enrolled on NATS).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.bus import EVENTS_STREAM, connect_as, events_stream_config
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.nats_auth import ADMIN, OBSERVER, SIGN_MARKERS
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import free_port
from ccpipe.pipeline.services import embedded_services, registry_password_file
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "ccpipe"]
SERVED = ("kbs", "audit", "build", "build", "attest", "sign", "push", "schedule", "runner")
"""One process each (two build replicas), the services the stages need first."""


class Processes:
    """Child processes of one test, each with its log; :meth:`close` leaves none running."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*CCPIPE, *args], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def log(self, index: int) -> str:
        name, _ = self.procs[index]
        return (self.logs / f"{name}-{index}.log").read_text(errors="replace")

    def wait_ready(self, markers: tuple[str, ...], timeout: float) -> None:
        """Until every process but the first (``up``) logged one of ``markers``; fails naming one that exited."""
        deadline = time.monotonic() + timeout
        waiting = set(range(1, len(self.procs)))
        while waiting and time.monotonic() < deadline:
            for i in list(waiting):
                assert self.procs[i][1].poll() is None, f"{self.procs[i][0]} exited:\n{self.log(i)[-3000:]}"
                if any(marker in self.log(i) for marker in markers):
                    waiting.discard(i)
            time.sleep(0.3)
        assert not waiting, f"not ready: {[self.procs[i][0] for i in waiting]}"

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


def serve_env(data: Path, nats_url: str, eps: dict[str, object]) -> dict[str, str]:
    """The environment of a ``ccpipe serve`` beside ``up --only nats,registry`` on ``data``: its NATS
    and registry (pushing with the push password), a KBS on a free port, emulation allowed."""
    kbs_port = free_port()
    return {"CCPIPE_DATA_DIR": str(data), "CCPIPE_NATS_URL": nats_url, "CCPIPE_REGISTRY": str(eps["registry"]),
            "CCPIPE_REGISTRY_USERNAME": "ccpipe-push",
            "CCPIPE_REGISTRY_PASSWORD_FILE": str(registry_password_file(data, "push")),
            "CCPIPE_KBS_PORT": str(kbs_port), "CCPIPE_KBS_URL": f"http://127.0.0.1:{kbs_port}",
            "CCPIPE_ALLOW_EMULATED": "true"}


def wait_endpoints(data: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ccpipe up exited"
        try:
            eps: dict[str, object] = json.loads((data / "endpoints.json").read_text())
        except (OSError, ValueError):
            eps = {}
        if eps.get("pid") == proc.pid:
            return eps
        time.sleep(0.2)
    raise AssertionError("ccpipe up published no endpoints")


def nats_server_pids(up: subprocess.Popen[bytes]) -> dict[str, int]:
    """The cluster's nats-server processes under ``up``, by server name."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{up.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
            if "nats-cluster" in cmdline:
                out[cmdline.split("nats-cluster/")[1].split("/")[0]] = int(child)
    return out


@asynccontextmanager
async def observer(settings: Settings, url: str) -> AsyncIterator[JetStreamContext]:
    nc = await connect_as(settings, url, OBSERVER)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def wait_exited(settings: Settings, url: str, workloads: list[str], timeout: float) -> dict[str, list[str]]:
    """Each workload's event types once all of them exited or failed (or the time is up)."""
    deadline = time.monotonic() + timeout
    types: dict[str, list[str]] = {}
    async with observer(settings, url) as js:
        while time.monotonic() < deadline:
            try:
                for wid in workloads:
                    types[wid] = [s.event.type.value for s in await read_events(js, wid) if s.event]
            except NatsError:  # a stream leader lost with its node: re-elected within seconds
                await asyncio.sleep(0.5)
                continue
            if all({"workload.exited", "failed"} & set(t) for t in types.values()):
                break
            await asyncio.sleep(0.5)
    return types


async def wait_stream_leader(settings: Settings, url: str, *, not_on: str, timeout: float) -> None:
    """Until ``CCPIPE_EVENTS`` has a leader on another node than ``not_on`` (bounded)."""
    deadline = time.monotonic() + timeout
    async with observer(settings, url) as js:
        while time.monotonic() < deadline:
            try:
                info = await js.stream_info(EVENTS_STREAM)
                if info.cluster and info.cluster.leader and info.cluster.leader != not_on:
                    return
            except NatsError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"{EVENTS_STREAM} has no leader {timeout:.0f} s after losing {not_on}")


def submit(work: Path, env: dict[str, str]) -> str:
    out = subprocess.run([*CCPIPE, "submit", "--json", str(work)], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    workload: str = json.loads(out.stdout)["workload_id"]
    return workload


async def test_up_only_cluster_and_one_serve_per_component_complete_workloads_through_a_lost_node(
        tmp_path: Path, processes: Processes) -> None:
    data = tmp_path / "data"
    up = processes.start("up", ["up", "--only", "nats,registry", "--cluster", "3"], {"CCPIPE_DATA_DIR": str(data)})
    eps = wait_endpoints(data, up)
    url, nodes = str(eps["nats_url"]), eps["nats_nodes"]
    assert isinstance(nodes, list) and len(nodes) == 3 and url == ",".join(nodes)
    endpoints = subprocess.run([*CCPIPE, "endpoints", "--json"], env={**os.environ, "CCPIPE_DATA_DIR": str(data)},
                               capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(endpoints.stdout)["nats_nodes"] == nodes
    with urllib.request.urlopen(f"{eps['nats_monitor_url']}/jsz", timeout=5) as resp:
        meta = json.load(resp)["meta_cluster"]
    assert meta["cluster_size"] == 3 and meta["leader"], meta
    settings = Settings(data_dir=data, nats_url=url)
    admin = await connect_as(settings, url, ADMIN)
    try:
        assert (await admin.jetstream().stream_info(EVENTS_STREAM)).config.num_replicas == 3
    finally:
        await admin.close()

    env = serve_env(data, url, eps)
    health = free_port()
    for component in SERVED:
        processes.start(component, ["serve", component],
                        {**env, "CCPIPE_METRICS_PORT": str(health)} if component == "attest" else env)
    processes.wait_ready(("ccpipe serves ", "runner node "), timeout=90)
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=5) as resp:
        assert resp.status == 200
    _, work = make_demo_repository(tmp_path / "demo", data)
    first = [submit(work, env) for _ in range(4)]
    types = await wait_exited(settings, url, first, timeout=90)
    for wid, seen in types.items():
        assert "workload.exited" in seen, f"{wid}: {seen}\n" + "\n".join(
            processes.log(i)[-1500:] for i in range(len(processes.procs)))
        assert seen.count("built") == 1 and seen.count("signed") == 1 and "failed" not in seen, seen


    # one node of three lost: the stream and buckets (R3) keep a majority, clients move over
    victim = nats_server_pids(up)["ccpipe_n3"]
    os.kill(victim, signal.SIGKILL)
    # the trail's leader, if it was on that node, is re-elected within seconds; a submit that asks the
    # JetStream API in between waits for an answer that comes only then (the git hook's 5 s are too few)
    await wait_stream_leader(settings, url, not_on="ccpipe_n3", timeout=30)
    later = [submit(work, env) for _ in range(2)]
    types = await wait_exited(settings, url, later, timeout=120)  # retries back off through re-elections
    for wid, seen in types.items():
        assert "workload.exited" in seen and seen.count("built") == 1 and "failed" not in seen, f"{wid}: {seen}"
    # the replicas pull from one consumer: over six workloads both took some (a loaded machine may
    # let one replica's pending pull win a few in a row, so the count is over all six)
    async with observer(settings, url) as js:
        builders = {s.event.source.instance for wid in first + later for s in await read_events(js, wid)
                    if s.event and s.event.type == EventType.BUILT}
    assert len(builders) == 2, f"the two build replicas did not share the work: {builders}"


async def test_a_stream_or_bucket_with_too_few_replicas_on_a_cluster_is_refused_naming_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with embedded_services(settings.model_copy(update={"registry": "127.0.0.1:1"}), cluster_size=3) as eps:
        nc = await connect_as(settings, eps.nats_url, ADMIN)
        try:
            js = nc.jetstream()
            await provision_as_admin(settings, eps.nats_url)  # everything on three servers
            await js.delete_key_value(SIGN_MARKERS)
            await js.create_key_value(KeyValueConfig(bucket=SIGN_MARKERS, storage=StorageType.FILE, replicas=1))
            with pytest.raises(ConfigurationError, match=f"bucket {SIGN_MARKERS} has 1 replica"):
                await provision_as_admin(settings, eps.nats_url)
            await js.delete_key_value(SIGN_MARKERS)
            await js.delete_stream(EVENTS_STREAM)
            await js.add_stream(events_stream_config(replicas=1))
            with pytest.raises(ConfigurationError, match=f"stream {EVENTS_STREAM} has 1 replica"):
                await provision_as_admin(settings, eps.nats_url)
        finally:
            await nc.close()


def test_serve_names_what_is_not_provisioned(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with embedded_services(settings.model_copy(update={"registry": "127.0.0.1:1"})) as eps:
        out = subprocess.run([*CCPIPE, "serve", "build"], capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "CCPIPE_DATA_DIR": str(tmp_path), "CCPIPE_NATS_URL": eps.nats_url})
    assert out.returncode != 0
    assert f"stream {EVENTS_STREAM} does not exist" in out.stderr
    assert "ccpipe up --only nats,registry" in out.stderr
