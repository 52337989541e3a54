"""The fault run of issue 17: 100 workloads on the embedded default with three more runner nodes,
while ``ccpipe up`` (then restarted on the same data directory), one runner node and the audit
log's lease holder are each SIGKILLed.

What must hold afterwards: every workload ends ``workload.exited`` (one placed on a killed node
before it ran is placed again and exits), no output event is repeated, no key is released twice
for one attestation, the children of every killed process went with it and nothing started for
this data directory outlives the run, ``ccpipe audit verify`` (its index included) passes, and
the audit index holds every event of the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from ccpipe.pipeline.audit.lease import LEASE_BUCKET, LEASE_KEY
from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.store.open import open_index
from ccpipe.pipeline.bus import EventPublisher, connect_as
from ccpipe.pipeline.cli.common import jetstream
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.nats_auth import ADMIN
from ccpipe.pipeline.reader import StoredEvent, iter_events
from ccpipe.pipeline.services import find_endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.source_bundles import pipeline_submission
from ccpipe.pipeline.trigger import resolve_push
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.events import EventType, KeyReleased, Scheduled

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "ccpipe"]
WORKLOADS = 100
IN_FLIGHT = 12
RUNNER_NODES = ("fault-node-1", "fault-node-2", "fault-node-3")
ENDS = (EventType.WORKLOAD_EXITED, EventType.FAILED)
ONCE_PER_WORKLOAD = {
    EventType.SUBMITTED: Component.SUBMIT, EventType.BUILT: Component.BUILD,
    EventType.ATTESTATION_VERIFIED: Component.ATTEST, EventType.SIGNED: Component.SIGN,
    EventType.PUSHED: Component.PUSH, EventType.WORKLOAD_RUNNING: Component.RUNNER,
    EventType.WORKLOAD_EXITED: Component.RUNNER,
}
"""Outputs a workload has exactly once (type: its emitter), however often a process was killed under it."""
ONCE_PER_LAUNCH = {
    EventType.ENCLAVE_LAUNCHED: Component.RUNNER, EventType.IMAGE_VERIFIED: Component.RUNNER,
    EventType.IMAGE_UNPACKED: Component.RUNNER,
}
"""A runner's outputs of one launch: at most once per placement of the workload (a node restarted
mid-launch begins it again under the same message ids; the KBS appraises each attempt anew)."""
STALL_S = 150.0
"""Longest wait for the next workload to end (a restart and a takeover included)."""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaps has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, their children…) and its command name."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for kid in kids:
                try:
                    found[kid] = Path(f"/proc/{kid}/comm").read_text().strip()
                except OSError:
                    continue
                todo.append(kid)
    return found


def wait_gone(pids: dict[int, str], timeout: float) -> dict[int, str]:
    """The processes of ``pids`` still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {pid: name for pid, name in pids.items() if alive(pid)}


def processes_of(data: Path) -> dict[int, str]:
    """Processes (other than this one) whose environment names ``data`` as their data directory:
    whatever the run started, at any depth, children of killed processes included."""
    marker = f"CCPIPE_DATA_DIR={data}\0".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() + b"\0" and alive(int(entry.name)):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
    return found


class Processes:
    """The run's ``ccpipe`` processes, each logging to its own file; :meth:`close` stops what still runs."""

    def __init__(self, root: Path, data: Path) -> None:
        self.root, self.data = root, data
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CCPIPE_")}
        self.env["CCPIPE_DATA_DIR"] = str(data)
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``ccpipe ARGS`` in the background, its output in ``<root>/<name>-<n>.log``."""
        log = self.root / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*CCPIPE, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What ``proc`` has written so far."""
        return next(log.read_text(errors="replace") for p, log in self.started if p is proc)

    def wait_for(self, proc: subprocess.Popen[bytes], said: str, timeout: float = 120.0) -> None:
        """Until ``proc`` has written ``said``; fails (with its output) when it exits first or never does."""
        deadline = time.monotonic() + timeout
        while said not in self.log(proc):
            assert proc.poll() is None, f"{proc.args!r} exited {proc.returncode}:\n{self.log(proc)[-3000:]}"
            assert time.monotonic() < deadline, f"{proc.args!r} never said {said!r}:\n{self.log(proc)[-3000:]}"
            time.sleep(0.2)

    def start_up(self) -> subprocess.Popen[bytes]:
        """``ccpipe up``, once it serves (its endpoints written, every stage started)."""
        up = self.start("up", "up")
        self.wait_for(up, "Press Ctrl-C to stop.", timeout=150.0)
        return up

    def close(self) -> None:
        """Interrupt what still runs (SIGKILL after 45 s)."""
        running = [p for p, _ in self.started if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGINT)
        for proc in running:
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path, tmp_path / "data")
    yield procs
    procs.close()
    for pid in processes_of(procs.data):  # a failed run leaves nothing behind either
        os.kill(pid, signal.SIGKILL)


class Trail:
    """What the stream holds, read again from where the last read stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stored: list[StoredEvent] = []
        self.ended: dict[str, EventType] = {}
        self.placed: dict[str, str] = {}
        """Workload → the node of its latest placement, while it is being launched there (not yet running)."""

    async def _read(self) -> None:
        after = self.stored[-1].seq if self.stored else 0
        async with jetstream(self.settings, "ccpipe-fault-test") as js:
            async for stored in iter_events(js, start_seq=after + 1):
                if stored.seq <= after:
                    continue
                self.stored.append(stored)
                event = stored.event
                if event is None:
                    continue
                if event.type in ENDS or event.type == EventType.WORKLOAD_RUNNING:
                    self.placed.pop(event.workload_id, None)
                if event.type in ENDS:
                    self.ended.setdefault(event.workload_id, event.type)
                elif isinstance(event.payload, Scheduled) and event.workload_id not in self.ended:
                    self.placed[event.workload_id] = event.payload.node_id

    def refresh(self) -> None:
        """Read what was stored since the last read (the services must be up)."""
        asyncio.run(asyncio.wait_for(self._read(), 60))


class Submitter:
    """Submits workloads of the demo repository as the git hook does (the submit identity, signed)."""

    def __init__(self, settings: Settings, repo: Path) -> None:
        self.settings, self.push = settings, resolve_push(repo, None)
        self.count = 0

    async def _submit(self, n: int) -> None:
        async with jetstream(self.settings, "ccpipe-fault-submit", Component.SUBMIT) as js:
            publisher = EventPublisher(js, signer=event_signer(self.settings.data_dir))
            for _ in range(n):
                await publisher.publish(await pipeline_submission(js, self.settings.data_dir, self.push))
                self.count += 1

    def submit(self, n: int) -> None:
        if n > 0:
            asyncio.run(asyncio.wait_for(self._submit(n), 60))


async def lease_holder_pid(settings: Settings) -> int | None:
    """The pid of the audit log process that holds the writer lease now (holders are host:pid:tag)."""
    nc = await connect_as(settings, find_endpoints(settings).nats_url, ADMIN, name="ccpipe-fault-lease")
    try:
        kv = await nc.jetstream().key_value(LEASE_BUCKET)
        try:
            entry = await kv.get(LEASE_KEY)
        except (KeyNotFoundError, KeyDeletedError):  # nobody holds it right now (between two holders)
            return None
        return int((entry.value or b"::").decode().split(":")[1] or 0) or None
    finally:
        await nc.close()


def indexed_seqs(settings: Settings) -> set[int]:
    """The stream sequences of every event the audit index holds (read page by page)."""
    index, seqs, after = open_index(settings), set[int](), 0
    try:
        while page := index.query(EventFilter(limit=10_000, after_seq=after)):
            seqs |= {e.seq for e in page}
            after = max(e.seq for e in page)
    finally:
        index.close()
    return seqs


def sigkill(proc_pid: int, what: str) -> dict[int, str]:
    """SIGKILL one process as a crash would, and assert its children went with it."""
    children = descendants(proc_pid)
    os.kill(proc_pid, signal.SIGKILL)
    left = wait_gone(children, 15.0)
    assert left == {}, f"children of the SIGKILLed {what} kept running: {left}"
    return children


@pytest.mark.timeout(420)
def test_a_hundred_workloads_survive_killing_up_a_runner_node_and_the_audit_writer(
    tmp_path: Path, processes: Processes
) -> None:
    started = time.monotonic()
    data = processes.data
    data.mkdir()
    settings = load_settings(data_dir=data)
    _, work = make_demo_repository(tmp_path / "repo", data)
    up = processes.start_up()
    runners = {node: processes.start(node, "runner", "--node-id", node) for node in RUNNER_NODES}
    for runner in runners.values():
        processes.wait_for(runner, "waits for scheduled workloads")
    # two audit processes beside the one in 'up': a standby for each holder that is killed
    audits = [processes.start("audit", "audit", "serve") for _ in range(2)]
    for audit in audits:
        processes.wait_for(audit, "audit log: following")

    trail, submitter = Trail(settings), Submitter(settings, work)
    killed: list[str] = []

    def kill_up() -> None:
        nonlocal up
        sigkill(up.pid, "ccpipe up")
        up.wait()
        killed.append("up")
        up = processes.start_up()  # restarted at once on the same data directory, as a supervisor would

    def kill_runner() -> None:
        # one with a workload placed on it, if one can be caught in time: a launch is cut short
        deadline = time.monotonic() + 20
        while not (busy := [n for n in trail.placed.values() if n in runners]) and time.monotonic() < deadline:
            time.sleep(0.1)
            trail.refresh()
        node = busy[0] if busy else RUNNER_NODES[0]
        sigkill(runners[node].pid, f"runner node {node}")
        killed.append(node)

    def kill_audit_writer() -> None:
        # The audit log in 'up' and the two 'audit serve' processes race for the lease after a
        # restart; while 'up' holds it, 'up' is the writer's process: killed (once more), a serve may win.
        deadline = time.monotonic() + 30
        while True:
            holder = asyncio.run(lease_holder_pid(settings))
            if holder in {a.pid for a in audits if a.poll() is None}:
                sigkill(holder, "audit log writer")
                killed.append("audit serve")
                return
            if holder == up.pid and killed.count("up") < 2:
                kill_up()
                deadline = time.monotonic() + 30
            elif holder == up.pid and time.monotonic() > deadline:
                return
            assert time.monotonic() < deadline, f"nobody took the writer lease (holder pid {holder})"
            time.sleep(0.5)

    faults = [(15, kill_up), (40, kill_runner), (65, kill_audit_writer)]
    last_end, ended = time.monotonic(), 0
    while len(trail.ended) < WORKLOADS:
        if faults and len(trail.ended) >= faults[0][0]:
            faults.pop(0)[1]()
            last_end = time.monotonic()
        submitter.submit(min(WORKLOADS, len(trail.ended) + IN_FLIGHT) - submitter.count)
        time.sleep(0.5)
        trail.refresh()
        if len(trail.ended) > ended:
            last_end, ended = time.monotonic(), len(trail.ended)
        assert time.monotonic() - last_end < STALL_S, (
            f"no workload ended for {STALL_S:.0f} s ({len(trail.ended)} of {submitter.count}); "
            f"unfinished: {sorted(set(trail.placed.items()))[:10]}")
    assert not faults, "the run ended before every fault was injected"
    assert "audit serve" in killed or killed.count("up") == 2, killed
    assert submitter.count == WORKLOADS

    # every submitted workload ends, and exits
    events = [s.event for s in trail.stored if s.event is not None]
    assert [s.seq for s in trail.stored if s.event is None] == []
    failed = {e.workload_id: e.payload for e in events if e.type == EventType.FAILED}
    assert failed == {}
    submitted = {e.workload_id for e in events if e.type == EventType.SUBMITTED}
    assert set(trail.ended) == submitted and len(submitted) == WORKLOADS
    assert set(trail.ended.values()) == {EventType.WORKLOAD_EXITED}

    # no output twice; a workload placed again went through one more scheduling attempt, never two launches
    per_type = Counter((e.workload_id, e.type, e.source.component) for e in events)
    attempts: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if isinstance(e.payload, Scheduled):
            attempts[e.workload_id].append(e.payload.attempt)
    assert all(sorted(a) == list(range(1, len(a) + 1)) for a in attempts.values()), attempts
    assert {wl: [(t.value, n) for (w, t, c), n in per_type.items() if w == wl and ONCE_PER_WORKLOAD.get(t) == c]
            for wl in submitted} == {wl: [(t.value, 1) for t in ONCE_PER_WORKLOAD] for wl in submitted}
    repeated = {k: n for k, n in per_type.items() if ONCE_PER_LAUNCH.get(k[1]) == k[2] and n > len(attempts[k[0]])}
    assert repeated == {}
    # one attestation (one launch) gets each of its resources once
    releases = Counter((e.payload.attestation_event_id, e.payload.resource) for e in events
                       if isinstance(e.payload, KeyReleased))
    assert {k: n for k, n in releases.items() if n > 1 or k[0] is None} == {}
    assert len({attestation for attestation, _ in releases}) >= len(submitted)

    # the audit log caught up with the stream, and verify (index included) passes
    stream_seqs = {s.seq for s in trail.stored}
    deadline, logged = time.monotonic() + 90, set[int]()
    while logged != stream_seqs and time.monotonic() < deadline:
        time.sleep(1.0)
        trail.refresh()
        stream_seqs = {s.seq for s in trail.stored}
        logged = indexed_seqs(settings)
    assert stream_seqs - logged == set(), "events of the stream missing from the audit index"
    assert logged - stream_seqs == set()
    verify = subprocess.run([*CCPIPE, "audit", "verify", "--json"], env=processes.env, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    report = json.loads(verify.stdout)
    assert report["ok"] and report["index"]["ok"] and report["stream_unreachable"] is None

    # nothing started for this data directory outlives a clean stop
    processes.close()
    assert wait_gone(processes_of(data), 15.0) == {}
    print(f"fault run: {len(submitted)} workloads, killed {', '.join(killed)}; "
          f"{sum(len(a) > 1 for a in attempts.values())} placed again; {time.monotonic() - started:.0f} s")
