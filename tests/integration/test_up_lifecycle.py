"""``ccpipe up`` killed and restarted, as a crash does it: no server outlives it, one nats-server per
store, and what a workload signed before the crash names (KBS URL, registry) still holds after it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.enclave_runner.launch import Launcher, LaunchReport
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.pipeline.bus import EventPublisher, connect_as
from ccpipe.pipeline.cli.demo_repository import make_demo_repository, run_git
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.nats_auth import OBSERVER, runner_identity
from ccpipe.pipeline.ports import ports_file
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType, Scheduled

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "ccpipe"]
SERVERS = {"nats-server", "docker-registry"}


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaps has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command names."""
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
    return out


class Up:
    """``python -m ccpipe up`` on one data directory, in a subprocess; :meth:`close` leaves nothing running."""

    def __init__(self, data: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.out = log.open("w")
        self.proc = subprocess.Popen([*CCPIPE, "up"],
                                     env={**os.environ, "CCPIPE_DATA_DIR": str(data), **(env or {})},
                                     stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.children: dict[int, str] = {}
        """Its child processes (servers, worker processes) once it published its endpoints."""

    def endpoints(self, timeout: float = 60.0) -> dict[str, object]:
        """The endpoints this ``up`` published (an earlier, killed one may have left its own file)."""
        path, deadline = self.data / "endpoints.json", time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ccpipe up exited: {Path(self.out.name).read_text()[-2000:]}"
            try:
                eps: dict[str, object] = json.loads(path.read_text())
            except (OSError, ValueError):
                eps = {}
            if eps.get("pid") == self.proc.pid and eps.get("kbs_url") and eps.get("audit_api_url"):
                self.children = children(self.proc.pid)
                return eps
            time.sleep(0.2)
        raise AssertionError(f"ccpipe up published no endpoints in {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL ``up`` alone, as a crash would."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Whatever happened, nothing of this ``up`` keeps running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.out.close()


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


def start_up(ups: list[Up], data: Path, env: dict[str, str] | None = None) -> Up:
    up = Up(data, data.parent / f"up-{len(ups)}.log", env)
    ups.append(up)
    return up


def wait_gone(pids: dict[int, str], timeout: float) -> dict[int, str]:
    """The processes of ``pids`` still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {pid: name for pid, name in pids.items() if alive(pid)}


def test_a_killed_up_takes_its_servers_along_and_a_second_up_is_refused_naming_the_first(
    tmp_path: Path, ups: list[Up]
) -> None:
    data = tmp_path / "data"
    up = start_up(ups, data)
    up.endpoints()
    assert set(up.children.values()) >= SERVERS, up.children
    second = subprocess.run([*CCPIPE, "up"], env={**os.environ, "CCPIPE_DATA_DIR": str(data)},
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 3, second.stderr
    assert "already runs the embedded servers" in second.stderr and f"pid {up.proc.pid} since " in second.stderr
    assert "Traceback" not in second.stderr
    up.kill()
    assert wait_gone(up.children, 10.0) == {}, "children of a SIGKILLed 'ccpipe up' kept running"


def test_one_jetstream_store_is_opened_by_one_nats_server(tmp_path: Path) -> None:
    first = EmbeddedNats(tmp_path).start()
    try:
        with pytest.raises(ConfigurationError) as refused:
            EmbeddedNats(tmp_path).start()
        assert f"the JetStream store {tmp_path / 'jetstream'} is open in another nats-server" in refused.value.message
        assert f"pid {os.getpid()} since " in refused.value.message
        assert f"nats-server pid {first.pid}" in refused.value.message
        assert first.pid is not None and alive(first.pid)
    finally:
        first.stop()
    EmbeddedNats(tmp_path).start().stop()  # stopping released the store


def test_a_port_taken_by_another_program_is_named_with_its_setting(tmp_path: Path, ups: list[Up]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        ports_file(data).write_text(json.dumps({"kbs": port}))
        r = subprocess.run([*CCPIPE, "up"], env={**os.environ, "CCPIPE_DATA_DIR": str(data)},
                           capture_output=True, text=True, timeout=90)
    assert r.returncode == 3, r.stderr
    assert f"port {port} of the embedded KBS" in r.stderr and "taken by another program" in r.stderr
    assert "CCPIPE_KBS_PORT" in r.stderr and "Traceback" not in r.stderr


def wait_for_exit(data: Path, timeout: float) -> str:
    """The workload id once ``workload.exited`` is in the stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([*CCPIPE, "events", "--json"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "CCPIPE_DATA_DIR": str(data)})
        events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        failed = [e for e in events if e["type"] == "dev.ccpipe.failed"]
        assert not failed, failed
        exited = [e for e in events if e["type"] == "dev.ccpipe.workload.exited"]
        if exited:
            return str(exited[0]["subject"])
        time.sleep(1.0)
    raise AssertionError(f"no workload.exited within {timeout:.0f} s")


async def launch_again(data: Path, eps: dict[str, object], workload_id: str) -> LaunchReport:
    """Launch the workload's ``scheduled`` event again, as its node does under the restarted ``up``."""
    settings = Settings(data_dir=data, allow_emulated=True)
    nc = await connect_as(settings, str(eps["nats_url"]), OBSERVER)
    try:
        scheduled = await workload_event(nc.jetstream(), workload_id, EventType.SCHEDULED, trust=input_trust(data))
    finally:
        await nc.close()
    assert isinstance(scheduled.payload, Scheduled)
    node = RunnerNode(scheduled.payload.node_id)
    nc = await connect_as(settings, str(eps["nats_url"]), runner_identity(node.node_id))
    try:
        js = nc.jetstream()
        publisher = EventPublisher(js, signer=event_signer(data))

        async def publish(event: Event, msg_id: str) -> None:
            await publisher.publish(event, msg_id)

        async def lookup(wl: str, etype: EventType) -> Event:
            return await workload_event(js, wl, etype, trust=input_trust(data))

        launcher = Launcher(settings, node, kbs_url=str(eps["kbs_url"]), publish=publish, lookup=lookup)
        return await asyncio.wait_for(launcher.launch(scheduled), timeout=120)
    finally:
        await nc.close()


def test_a_workload_signed_before_a_crash_runs_after_the_restart(tmp_path: Path, ups: list[Up]) -> None:
    data = tmp_path / "data"
    # the relaunched workload has ended once already: registry retention keeps its image only if told to
    keep = {"CCPIPE_RETAIN_WORKLOADS": "1"}
    first = start_up(ups, data, keep)
    before = first.endpoints()
    _, work = make_demo_repository(tmp_path / "repo", data)
    run_git(work, "push", "-q", "origin", "main")  # the hook submits it
    workload_id = wait_for_exit(data, 120.0)
    first.kill()
    # restarted at once, as a supervisor would: it waits for the killed one's servers to let go
    after = start_up(ups, data, keep).endpoints()
    assert wait_gone(first.children, 0.0) == {}
    named = ("nats_url", "registry", "kbs_url", "audit_api_url")  # what initdata, keys and nodes name
    assert {k: after[k] for k in named} == {k: before[k] for k in named}
    report = asyncio.run(launch_again(data, after, workload_id))
    assert report.failure is None, report.failure
    assert report.result is not None and report.result.exit_code == 0
    assert b"from a confidential workload built by ccpipe" in report.result.log
