"""Linux network namespaces standing in for machines in multi-host tests (test support, not product code).

A :class:`Network` (one per test, needs root and iproute2's ``ip``) creates, under a per-run
prefix ``ccpipe-<run>-``:

- a *switch* namespace ``ccpipe-<run>-switch`` holding one bridge, ``br0``;
- one namespace per machine, ``ccpipe-<run>-<machine>``, with ``lo`` up and an ``eth0`` on the
  private subnet ``10.231.<n>.0/24``; ``eth0`` is one end of a veth pair whose other end is a
  port of the bridge, so every machine reaches every other one and nothing else.

Nothing is created in the root namespace: the veth pairs are made inside the switch namespace,
so deleting the namespaces deletes every link with them, and another test's network (other
switch, other namespaces) never sees this one.

Processes run inside a machine with :meth:`Network.spawn`: their own environment, a fresh data
directory that is also their working directory and ``HOME``, their own session (so process
group), output to a log file, and a parent-death signal so a SIGKILLed pytest does not leave
them running. :meth:`Network.close` removes everything: processes killed by process group, any
process still inside a namespace killed, the namespaces deleted. It runs from the test
fixture's finaliser and from ``atexit``; what a crashed run still left behind is found by its
prefix and removed when the next :class:`Network` starts (:func:`sweep_leftovers`). A run is
known to be alive by its owner record under :data:`OWNERS` (pid and process start time).

Every wait is bounded; a timeout raises :class:`NetnsError` naming what was waited for.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ccpipe.pipeline.children import parent_death_preexec

PREFIX = "ccpipe-"
"""Every namespace this module creates is named ``ccpipe-<run>-<name>``."""
RUN_ID_HEX = 6
NAME_RE = re.compile(rf"^{PREFIX}(?P<run>[0-9a-f]{{{RUN_ID_HEX}}})-(?P<name>[a-z0-9]+)$")
MACHINE_NAME_RE = re.compile(r"^[a-z0-9]{1,20}$")
SWITCH = "switch"
"""Name of the namespace that holds the bridge (not usable as a machine name)."""
BRIDGE = "br0"
OWNERS = Path("/run/ccpipe-netns")
"""One file per live run, ``<run>.json``: the pid and start time of the process that owns it."""
MAX_MACHINES = 250
IP_TIMEOUT_S = 10.0
KILL_WAIT_S = 10.0
# Environment a process in a machine inherits from the test; everything else is given explicitly.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TZ")


class NetnsError(RuntimeError):
    """An ``ip`` command failed or a bounded wait ran out."""


@functools.cache
def ip_binary() -> str:
    """Absolute path of iproute2's ``ip``; raises :class:`NetnsError` with the way to install it."""
    path = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if path is None:
        raise NetnsError("iproute2's 'ip' is not installed: run 'sudo scripts/install-system-deps.sh'")
    return path


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (not root), or None when they can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs the suite as root)"
    return None


def ip(*args: str, timeout: float = IP_TIMEOUT_S, check: bool = True) -> str:
    """Run ``ip ARGS`` and return its output; raises :class:`NetnsError` naming the command on failure."""
    argv = [ip_binary(), *args]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from exc
    if check and out.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def namespaces() -> list[str]:
    """Every named network namespace on the machine (``ip netns list``)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def namespace_pids(netns: str) -> list[int]:
    """Processes inside ``netns`` (none once it is gone)."""
    return [int(p) for p in ip("netns", "pids", netns, check=False).split()]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is true; raises :class:`NetnsError` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise NetnsError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks), telling a reused pid apart; None if ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; the fields after its closing parenthesis do not
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended, though not yet reaped


def _process_groups() -> list[tuple[int, int]]:
    """``(pid, process group)`` of every process on the machine."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while listed
        out.append((int(stat.parent.name), int(fields[2])))
    return out


def _owner_alive(run: str) -> bool:
    """True while the process that wrote run ``run``'s owner record still runs (same pid, same start time)."""
    try:
        owner = json.loads((OWNERS / f"{run}.json").read_text())
        pid, start = int(owner["pid"]), str(owner["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no readable record: nobody claims the namespaces
    return process_start_time(pid) == start


def remove_namespace(netns: str) -> None:
    """Kill every process inside ``netns``, then delete it (its links go with it)."""
    for pid in namespace_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # a namespace with live processes outlives its name; wait so "deleted" means gone
    wait_until(lambda: not namespace_pids(netns), KILL_WAIT_S, f"the processes in {netns} to die")
    if netns in namespaces():
        ip("netns", "del", netns)


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of runs whose owner is dead (a crashed or SIGKILLed test); returns their names."""
    removed = []
    for netns in namespaces():
        m = NAME_RE.match(netns)
        if m and not _owner_alive(m["run"]):
            remove_namespace(netns)
            removed.append(netns)
    for record in OWNERS.glob("*.json") if OWNERS.is_dir() else ():
        if not _owner_alive(record.stem):
            record.unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class Machine:
    """One stand-in machine: its namespace and its address on the private subnet."""

    name: str
    netns: str
    address: str


@dataclass
class Process:
    """A process started in a machine by :meth:`Network.spawn`, leader of its own process group."""

    name: str
    machine: Machine
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        """Its pid, also its process group id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything it has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = KILL_WAIT_S) -> None:
        """Send ``sig`` to its whole process group and wait (bounded) for the leader to exit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(f"{self.name} on {self.machine.name} did not exit within {timeout:.0f} s of {sig.name}") \
                from exc
        self._log.close()

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Until ``text`` appears in its log; fails at once, with the log's tail, if it exits first."""
        def seen() -> bool:
            if text in self.log():
                return True
            if not self.alive():
                raise NetnsError(f"{self.name} on {self.machine.name} exited ({self.popen.returncode}) before "
                                 f"logging {text!r}:\n{self.log()[-2000:]}")
            return False
        wait_until(seen, timeout, f"{self.name} on {self.machine.name} to log {text!r}")


class Network:
    """Machines (network namespaces) on one private bridged subnet; :meth:`close` removes all of it.

    ``root`` holds the data directories and logs. Usable as a context manager.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_id = secrets.token_hex(RUN_ID_HEX // 2)
        # a private subnet per run: the networks are isolated anyway, but distinct addresses keep logs unambiguous
        self.subnet = f"10.231.{int(self.run_id[:2], 16)}"
        self.machines: dict[str, Machine] = {}
        self.processes: list[Process] = []
        self._created: list[str] = []
        self._closed = False
        self._ip = ip_binary()
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        sweep_leftovers()
        OWNERS.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        # the owner record exists before the first namespace, so a concurrent sweep never takes ours for a leftover
        (OWNERS / f"{self.run_id}.json").write_text(json.dumps({"pid": me, "start": process_start_time(me)}))
        atexit.register(self.close)
        self.switch = self._add_namespace(SWITCH)
        ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.switch, "link", "set", BRIDGE, "up")

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace_name(self, name: str) -> str:
        """The namespace of this run called ``name``."""
        return f"{PREFIX}{self.run_id}-{name}"

    def _add_namespace(self, name: str) -> str:
        netns = self.namespace_name(name)
        self._created.append(netns)  # before creating: a half-made namespace is still removed
        ip("netns", "add", netns)
        ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def add_machine(self, name: str) -> Machine:
        """A new machine ``name`` (lower-case letters and digits) with ``lo`` up and an address on the subnet."""
        if not MACHINE_NAME_RE.match(name) or name == SWITCH or name in self.machines:
            raise ValueError(f"machine name {name!r} is invalid or taken")
        if len(self.machines) >= MAX_MACHINES:
            raise ValueError(f"at most {MAX_MACHINES} machines on one /24")
        index = len(self.machines) + 1
        netns = self._add_namespace(name)
        port = f"p{index}"  # the bridge's end, named in the switch namespace only
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("-n", self.switch, "link", "set", port, "master", BRIDGE, "up")
        address = f"{self.subnet}.{index}"
        ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        machine = Machine(name, netns, address)
        self.machines[name] = machine
        return machine

    def data_dir_of(self, machine: Machine, name: str) -> Path:
        """The data directory :meth:`spawn` gives process ``name`` on ``machine``."""
        return self.root / machine.name / name

    def environment(self, data_dir: Path, env: Mapping[str, str] | None) -> dict[str, str]:
        """A process's environment: a few inherited variables, its data directory as home, then ``env``."""
        base = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        base.update(HOME=str(data_dir), CCPIPE_DATA_DIR=str(data_dir), TMPDIR=str(data_dir / "tmp"))
        return {**base, **(env or {})}

    @staticmethod
    def enter(machine: Machine) -> list[str]:
        """The command prefix that runs a program in ``machine``'s network namespace.

        ``nsenter --net`` rather than ``ip netns exec``: the latter also remounts ``/sys`` for the
        namespace, which hides the cgroup hierarchies a runner node bounds its sandboxes with; a
        real machine has them, so the stand-in must too.
        """
        return ["nsenter", f"--net=/run/netns/{machine.netns}", "--"]

    def spawn(self, machine: Machine, name: str, argv: Sequence[str], *,
              env: Mapping[str, str] | None = None, prepared: bool = False) -> Process:
        """Start ``argv`` inside ``machine`` with a fresh data directory ``<root>/<machine>/<name>`` as cwd.

        The directory must not exist yet (no two processes share one), unless ``prepared``: a
        one-shot command for this very process made it first (its key printed for enrolment).
        Output goes to ``<root>/logs/<machine>-<name>.log``.
        """
        data_dir = self.data_dir_of(machine, name)
        data_dir.mkdir(parents=True, exist_ok=prepared)  # FileExistsError: a second process must not reuse one
        (data_dir / "tmp").mkdir(exist_ok=prepared)
        log_path = self.root / "logs" / f"{machine.name}-{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            [*self.enter(machine), *argv], cwd=data_dir, env=self.environment(data_dir, env),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=parent_death_preexec(),
        )
        process = Process(name, machine, data_dir, log_path, popen, log)
        self.processes.append(process)
        return process

    def run(self, machine: Machine, argv: Sequence[str], *, timeout: float,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside ``machine`` (bounded by ``timeout``); its output is returned."""
        base = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        return subprocess.run([*self.enter(machine), *argv], env={**base, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)

    def wait_http_ok(self, machine: Machine, urls: Sequence[str], timeout: float) -> None:
        """Until every URL answers 200 to a GET made from inside ``machine``; raises :class:`NetnsError` if not."""
        probe = (
            "import sys, time, urllib.request\n"
            "deadline = time.monotonic() + float(sys.argv[1])\n"
            "for url in sys.argv[2:]:\n"
            "    while True:\n"
            "        try:\n"
            "            with urllib.request.urlopen(url, timeout=1) as r:\n"
            "                if r.status == 200: break\n"
            "        except OSError: pass\n"
            "        if time.monotonic() > deadline: sys.exit(f'no answer from {url}')\n"
            "        time.sleep(0.1)\n"
        )
        try:
            out = self.run(machine, [sys.executable, "-c", probe, str(timeout), *urls], timeout=timeout + 10)
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(f"the probe from {machine.name} did not end within {timeout:.0f} s") from exc
        if out.returncode != 0:
            raise NetnsError(f"from {machine.name}: {out.stderr.strip()[-500:]}")

    def remnants(self) -> list[str]:
        """What of this run still exists: its namespaces, and live processes it started (empty after close)."""
        left = [n for n in namespaces() if n.startswith(f"{PREFIX}{self.run_id}-")]
        groups = {p.pid: p.name for p in self.processes}
        left += [f"pid {pid} (in the process group of {groups[pgid]})" for pid, pgid in _process_groups()
                 if pgid in groups]
        return left

    def close(self) -> None:
        """Kill every process (by process group), delete every namespace and the owner record. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for process in reversed(self.processes):
            try:
                process.kill()
            except NetnsError as exc:
                errors.append(str(exc))
        for netns in reversed(self._created):
            try:
                remove_namespace(netns)
            except NetnsError as exc:
                errors.append(str(exc))
        (OWNERS / f"{self.run_id}.json").unlink(missing_ok=True)
        if errors:
            raise NetnsError("cleanup left something behind: " + "; ".join(errors))
