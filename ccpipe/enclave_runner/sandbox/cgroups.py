"""Per-run cgroups that bound a sandbox as a whole: its number of processes and its memory.

Each controller goes where this machine has it (:func:`~.cgroupfs.hierarchy_for`):

* cgroup v2 (the unified hierarchy): a subtree delegated to the runner, by default the
  runner's own cgroup, or the one ``CCPIPE_SANDBOX_CGROUP`` names. The runner enables ``pids``
  and ``memory`` in its ``cgroup.subtree_control`` (:func:`delegate`); v2 lets a non-root
  cgroup hand controllers to its children only while it holds no process itself, so the
  runner first moves its cgroup's processes into a leaf child (:data:`RUNNER_LEAF`). Each run
  then gets a child with ``pids.max``, ``memory.max`` and ``memory.swap.max = 0``.
* cgroup v1: a child of the runner's cgroup in the ``pids`` and ``memory`` hierarchies, with
  ``pids.max`` and ``memory.limit_in_bytes`` (and the memory+swap limit where swap is accounted).

The sandbox joins its cgroups between fork and exec (:func:`~.limits.child_setup`), before it
can fork; :func:`remove_cgroups` kills what is left (``cgroup.kill`` where the kernel has it)
and removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.sandbox.cgroupfs import (
    Hierarchies,
    hierarchy_for,
    locate,
    parse_mountinfo,
    parse_proc_cgroup,
)
from ccpipe.enclave_runner.sandbox.limits import ResourceLimits
from ccpipe.schemas.events import LimitKind, SandboxLimits

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_SELF_MOUNTINFO = Path("/proc/self/mountinfo")
LIMIT_CONTROLLERS = ("pids", "memory")
RUNNER_LEAF = "ccpipe-runner"
"""The leaf child of a delegated v2 cgroup that holds the runner's own processes (v2's "no internal processes")."""
RUN_PREFIX = "ccpipe-run-"
"""Name prefix of each run's cgroup."""


def own_hierarchies() -> Hierarchies:
    """This process's cgroup directories, read from ``/proc/self`` (none when unreadable)."""
    try:
        membership = parse_proc_cgroup(PROC_SELF_CGROUP.read_text())
        mounts = parse_mountinfo(PROC_SELF_MOUNTINFO.read_text())
    except OSError:
        return Hierarchies()
    return locate(membership, mounts)


def delegated_base(hierarchies: Hierarchies, configured: Path | None = None) -> Path | None:
    """The v2 cgroup whose children are the runs: ``configured``, else the runner's own cgroup.

    A runner already moved into :data:`RUNNER_LEAF` uses that leaf's parent, so the subtree
    does not grow one level per run.
    """
    if configured is not None:
        return configured
    own = hierarchies.unified
    if own is None:
        return None
    return own.parent if own.name == RUNNER_LEAF else own


def _words(path: Path) -> frozenset[str]:
    """The space-separated words of a cgroup file (empty when it cannot be read)."""
    try:
        return frozenset(path.read_text().split())
    except OSError:
        return frozenset()


def _move_processes_to_leaf(base: Path) -> None:
    """Move every process of ``base`` into its :data:`RUNNER_LEAF` child."""
    leaf = base / RUNNER_LEAF
    leaf.mkdir(exist_ok=True)
    for pid in (base / "cgroup.procs").read_text().split():
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            (leaf / "cgroup.procs").write_text(pid)


def delegate(base: Path, controllers: Iterable[str] = LIMIT_CONTROLLERS) -> frozenset[str]:
    """Enable for the children of ``base`` those of ``controllers`` it offers; returns the ones enabled.

    When ``base`` still holds processes (the runner itself, in its own cgroup) the kernel refuses
    with EBUSY: they are moved into :data:`RUNNER_LEAF` and the write is tried again. Nothing is
    enabled (an empty set) where ``base`` is not writable.
    """
    wanted = _words(base / "cgroup.controllers") & frozenset(controllers)
    control = base / "cgroup.subtree_control"
    missing = wanted - _words(control)
    if not missing:
        return wanted
    request = " ".join(f"+{name}" for name in sorted(missing))
    try:
        try:
            control.write_text(request)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            _move_processes_to_leaf(base)
            control.write_text(request)
    except OSError:
        return _words(control) & wanted  # the kernel enables all of a write or none of it
    return wanted


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def sweep_stale_runs(parent: Path) -> list[Path]:
    """Remove the run cgroups under ``parent`` left by runners that are gone (a runner killed with
    SIGKILL cannot remove its own); kills whatever still runs in them. Returns what was removed.

    A run cgroup is named ``ccpipe-run-<runner pid>-<ns>``: one whose runner pid is alive (this
    process's included) is left alone. Best effort: a cgroup that will not go is kept for the next sweep.
    """
    removed = []
    for path in parent.glob(f"{RUN_PREFIX}*"):
        owner = path.name.removeprefix(RUN_PREFIX).split("-", 1)[0]
        if not owner.isdigit() or _pid_alive(int(owner)) or not path.is_dir():
            continue
        _kill_members(path)
        with contextlib.suppress(OSError):
            path.rmdir()
            removed.append(path)
    return removed


_SWEPT: set[Path] = set()
"""The parents this process swept already (once each: a runner's own leftovers cannot appear later)."""


def _make_cgroup(parent: Path, settings: dict[str, str], optional: dict[str, str]) -> Path | None:
    """A fresh child cgroup of ``parent`` with ``settings`` written, or None when that is not allowed.

    ``optional`` settings are written where the kernel has the file (swap accounting may be off).
    The first time, what dead runners left under ``parent`` is removed (:func:`sweep_stale_runs`).
    """
    if parent not in _SWEPT:
        _SWEPT.add(parent)
        sweep_stale_runs(parent)
    try:
        path = parent / f"{RUN_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
    except OSError:
        return None
    try:
        for name, value in settings.items():
            (path / name).write_text(value)
        for name, value in optional.items():
            if (path / name).exists():
                (path / name).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


@dataclass
class RunCgroups:
    """The cgroups of one run and the hierarchy that holds each limit (a controller absent: no cgroup holds it)."""

    paths: list[Path] = field(default_factory=list)
    held: dict[str, LimitKind] = field(default_factory=dict)

    def applied(self, *, sandbox_is_host_root: bool) -> SandboxLimits:
        """Which limits hold the sandbox, the rlimits included.

        RLIMIT_NPROC binds every uid but host root's, so without a pids cgroup a sandbox that runs as
        host root has no process limit; RLIMIT_AS is set for every process, but per process.
        """
        pids = self.held.get("pids", LimitKind.NONE if sandbox_is_host_root else LimitKind.RLIMIT)
        return SandboxLimits(pids=pids, memory=self.held.get("memory", LimitKind.RLIMIT))


def _settings(controller: str, kind: LimitKind, limits: ResourceLimits) -> tuple[dict[str, str], dict[str, str]]:
    """The files a run's cgroup gets for ``controller`` on ``kind``: required ones, and ones written where present."""
    if controller == "pids":
        return {"pids.max": str(limits.nproc)}, {}
    limit = str(limits.memory_bytes)
    if kind is LimitKind.CGROUP_V2:
        return {"memory.max": limit}, {"memory.swap.max": "0"}
    return {"memory.limit_in_bytes": limit}, {"memory.memsw.limit_in_bytes": limit}


def run_cgroups(
    limits: ResourceLimits, *, delegated: Path | None = None, hierarchies: Hierarchies | None = None
) -> RunCgroups:
    """The cgroups of one run, made where this runner may (see the module docstring).

    ``delegated`` is a v2 cgroup given to the runner (``CCPIPE_SANDBOX_CGROUP``); ``hierarchies``
    defaults to this process's own (:func:`own_hierarchies`). One v2 cgroup holds every
    controller the unified hierarchy offers; each v1 controller gets its own.
    """
    found = hierarchies if hierarchies is not None else own_hierarchies()
    base = delegated_base(found, delegated)
    offers = delegate(base) if base is not None else frozenset()
    run = RunCgroups()
    on_v2: dict[str, str] = {}
    on_v2_optional: dict[str, str] = {}
    for controller in LIMIT_CONTROLLERS:
        kind = hierarchy_for(controller, offers, found)
        if kind is None:
            continue
        required, optional = _settings(controller, kind, limits)
        if kind is LimitKind.CGROUP_V2:
            on_v2 |= required
            on_v2_optional |= optional
        elif (path := _make_cgroup(found.v1[controller], required, optional)) is not None:
            run.paths.append(path)
            run.held[controller] = kind
    if on_v2 and base is not None and (path := _make_cgroup(base, on_v2, on_v2_optional)) is not None:
        run.paths.append(path)
        run.held |= {c: LimitKind.CGROUP_V2 for c in offers}
    return run


def missing_limits(applied: SandboxLimits) -> list[str]:
    """What a run lacks to be bounded as a whole: empty when its pids and memory are both held.

    A pids rlimit counts (it bounds the sandbox's own host uid); a memory rlimit does not (it
    bounds each process alone, so many processes together are not bounded).
    """
    missing = []
    if applied.pids is LimitKind.NONE:
        missing.append("a pids limit (no writable pids cgroup, v2 or v1, and the sandbox would run as host root)")
    if applied.memory in (LimitKind.NONE, LimitKind.RLIMIT):
        missing.append("a memory limit for the sandbox as a whole (no writable memory cgroup, v2 or v1)")
    return missing


def _kill_members(path: Path) -> None:
    """Kill every process left in the cgroup ``path``: ``cgroup.kill`` where the kernel has it (v2, 5.14+)."""
    kill = path / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
            return
    for pid in _words(path / "cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


async def remove_cgroups(paths: list[Path]) -> None:
    """Kill what is left of a run in its cgroups, then remove them once their last task is reaped."""
    for path in paths:
        _kill_members(path)
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                await asyncio.sleep(0.02)
