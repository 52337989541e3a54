"""The cgroup v2 steps on the kernel's own unified hierarchy: delegation past "no internal processes",
joining a run's cgroup before the first fork, and killing what is left with ``cgroup.kill``.

On this machine pids and memory are bound to v1 hierarchies, so the unified hierarchy offers
only ``hugetlb``: it stands in as the controller to delegate (the steps do not depend on which
one). pids.max and memory.max themselves are shown on v1 in test_runner_sandbox.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.enclave_runner.sandbox import cgroups
from ccpipe.enclave_runner.sandbox.cgroupfs import parse_mountinfo
from ccpipe.enclave_runner.sandbox.limits import ResourceLimits, child_setup

STAND_IN = "hugetlb"


def _unified_mount() -> Path:
    mounts = [m for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text()) if m.version == 2]
    assert mounts, "no cgroup2 filesystem is mounted"
    return mounts[0].mount_point


@pytest.fixture
def delegated() -> Iterator[Path]:
    """A fresh cgroup below the unified root, offered the stand-in controller; all put back afterwards."""
    assert os.geteuid() == 0, "this test needs root (CI runs as root)"
    top = _unified_mount()
    assert STAND_IN in (top / "cgroup.controllers").read_text().split()
    control = top / "cgroup.subtree_control"
    enabled_here = STAND_IN not in control.read_text().split()
    if enabled_here:
        control.write_text(f"+{STAND_IN}")  # the root cgroup is exempt from "no internal processes"
    base = top / f"ccpipe-test-{os.getpid()}-{secrets.token_hex(4)}"
    base.mkdir()
    try:
        yield base
    finally:
        for cgroup in [*sorted(base.rglob("*"), key=lambda p: -len(p.parts)), base]:  # deepest first
            if cgroup.is_dir():
                for pid in (cgroup / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                for _ in range(100):
                    try:
                        cgroup.rmdir()
                        break
                    except OSError:  # its last task is still being reaped
                        time.sleep(0.02)
        if enabled_here:
            with contextlib.suppress(OSError):  # another run may still use it
                control.write_text(f"-{STAND_IN}")


def _cgroup_of(pid: int) -> str:
    return next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))


def test_runner_cgroup_v2_delegation_moves_the_runner_into_its_leaf(delegated: Path) -> None:
    """A cgroup holding a process cannot give controllers to children (EBUSY): the runner moves its processes."""
    runner = subprocess.Popen(["sleep", "60"])
    try:
        (delegated / "cgroup.procs").write_text(str(runner.pid))
        with pytest.raises(OSError, match="busy"):  # what the kernel says without the move
            (delegated / "cgroup.subtree_control").write_text(f"+{STAND_IN}")
        assert cgroups.delegate(delegated, [STAND_IN, "pids"]) == {STAND_IN}  # pids is not offered here
        assert (delegated / "cgroup.subtree_control").read_text().split() == [STAND_IN]
        assert (delegated / "cgroup.procs").read_text() == ""
        leaf = delegated / cgroups.RUNNER_LEAF
        assert (leaf / "cgroup.procs").read_text().split() == [str(runner.pid)]
        assert cgroups.delegate(delegated, [STAND_IN]) == {STAND_IN}  # a second run finds it done
    finally:
        runner.kill()
        runner.wait()


async def test_runner_cgroup_v2_run_joined_before_fork_and_survivors_killed(delegated: Path) -> None:
    """Every process of the run is in its cgroup, an escaped one too, and removing the cgroup kills it."""
    run = delegated / f"{cgroups.RUN_PREFIX}test"
    run.mkdir()
    script = "setsid sh -c 'echo escaped; exec sleep 60 >/dev/null' & sleep 60 & wait"  # one leaves the process group
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdout=asyncio.subprocess.PIPE,
        preexec_fn=child_setup(ResourceLimits(), [run]), start_new_session=True,
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"escaped\n"
    for _ in range(100):
        members = [int(p) for p in (run / "cgroup.procs").read_text().split()]
        if len(members) == 3:
            break
        await asyncio.sleep(0.02)
    assert proc.pid in members and len(members) == 3, members  # the shell and both children it forked
    assert {_cgroup_of(pid) for pid in members} == {"/" + str(run.relative_to(_unified_mount()))}
    os.killpg(proc.pid, signal.SIGKILL)  # what the supervisor does at the end; the setsid one escapes it
    await proc.wait()
    survivors = [int(p) for p in (run / "cgroup.procs").read_text().split()]
    assert len(survivors) == 1
    await cgroups.remove_cgroups([run])
    assert not run.exists()
    assert not Path(f"/proc/{survivors[0]}").exists() or "Z" in Path(f"/proc/{survivors[0]}/stat").read_text()
