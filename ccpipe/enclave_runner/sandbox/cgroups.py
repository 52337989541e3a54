"""Per-run cgroup v1 limits, where the runner may create them: a pids cgroup and a memory cgroup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from ccpipe.enclave_runner.sandbox.limits import ResourceLimits

CGROUP_V1 = Path("/sys/fs/cgroup")
PIDS_CGROUP_ROOT = CGROUP_V1 / "pids"
"""cgroup v1 pids hierarchy: where a per-run ``pids.max`` is set when the runner may write there."""


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (``/`` when unknown)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controller in controllers.split(","):
                    return path or "/"
    except (OSError, ValueError):
        pass
    return "/"


def _make_cgroup(parent: Path, settings: dict[str, str]) -> Path | None:
    """A fresh child cgroup of ``parent`` with ``settings`` written, or None when that is not allowed."""
    try:
        path = parent / f"ccpipe-run-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
    except OSError:
        return None
    try:
        for name, value in settings.items():
            (path / name).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


def pids_cgroup(limit: int, root: Path = PIDS_CGROUP_ROOT) -> Path | None:
    """A pids cgroup capped at ``limit`` tasks, or None when the runner cannot create one.

    RLIMIT_NPROC is not enforced for a runner running as root (the kernel exempts root's user),
    so where the pids controller is writable the cgroup is the limit that holds.
    """
    return _make_cgroup(root / _own_cgroup("pids").lstrip("/"), {"pids.max": str(limit)})


def memory_cgroup(limit: int) -> Path | None:
    """A memory cgroup below this process's own, capped at ``limit`` bytes for the whole sandbox.

    RLIMIT_AS bounds each process; the cgroup bounds their sum (the kernel's OOM killer acts
    inside it). None when the memory hierarchy is not writable.
    """
    parent = CGROUP_V1 / "memory" / _own_cgroup("memory").lstrip("/")
    return _make_cgroup(parent, {"memory.limit_in_bytes": str(limit)})


def run_cgroups(limits: ResourceLimits) -> list[Path]:
    """The cgroups of one run that this runner may create (none, one or both)."""
    return [c for c in (pids_cgroup(limits.nproc), memory_cgroup(limits.memory_bytes)) if c is not None]


async def remove_cgroups(paths: list[Path]) -> None:
    """Remove a run's cgroups once their last task is gone (it may take a moment to be reaped)."""
    for path in paths:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                await asyncio.sleep(0.02)
