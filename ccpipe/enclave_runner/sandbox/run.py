"""One run in the sandbox: start ``bwrap`` under its limits, supervise it, and report how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.errors import SandboxError, SandboxLimitsUnavailable, SandboxUnavailable
from ccpipe.enclave_runner.sandbox.bwrap import bwrap_argv, prepare_root
from ccpipe.enclave_runner.sandbox.cgroups import RunCgroups, missing_limits, remove_cgroups, run_cgroups
from ccpipe.enclave_runner.sandbox.host_user import hand_over
from ccpipe.enclave_runner.sandbox.limits import ResourceLimits, child_setup
from ccpipe.enclave_runner.sandbox.output import BoundedLog
from ccpipe.enclave_runner.sandbox.spec import DEFAULT_PATH, RunSpec
from ccpipe.schemas.events import SandboxLimits

TIMEOUT_EXIT_CODE = 137
"""Exit code reported when the wall-clock timeout killed the workload (128 + SIGKILL)."""


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    exit_code: int
    """The workload's exit status; 128 + N when signal N ended it (137 after the timeout)."""
    duration_s: float
    log: bytes = field(repr=False)
    log_digest: str
    """``sha256:<hex>`` of :attr:`log`, which goes into the ``workload.exited`` event."""
    log_truncated: bool
    dropped_bytes: int
    timed_out: bool
    limits: SandboxLimits
    """Which limits held the sandbox (also what ``on_start`` was given)."""


OnStart = Callable[[SandboxLimits], Awaitable[None]]
"""Awaited once the sandbox's process exists, with the limits that hold it."""


@dataclass(frozen=True)
class LimitPolicy:
    """How a runner bounds its sandboxes (``CCPIPE_SANDBOX_LIMITS``, ``CCPIPE_SANDBOX_CGROUP``)."""

    best_effort: bool = False
    """Run even where the sandbox cannot be bounded as a whole (the default refuses)."""
    delegated_cgroup: Path | None = None
    """The cgroup v2 directory given to the runner; None = its own cgroup."""


async def _bounded_cgroups(
    limits: ResourceLimits, host_uid: int | None, policy: LimitPolicy
) -> tuple[RunCgroups, SandboxLimits]:
    """A run's cgroups and the limits they give; raises :class:`SandboxLimitsUnavailable` (cgroups removed)."""
    cgroups = run_cgroups(limits, delegated=policy.delegated_cgroup)
    applied = cgroups.applied(sandbox_is_host_root=host_uid is None and os.geteuid() == 0)
    missing = missing_limits(applied)
    if missing and not policy.best_effort:
        await remove_cgroups(cgroups.paths)
        raise SandboxLimitsUnavailable(f"this runner cannot bound the sandbox: it lacks {' and '.join(missing)}")
    return cgroups, applied


async def check_limits(
    limits: ResourceLimits | None = None, *, host_uid: int | None = None, policy: LimitPolicy = LimitPolicy()
) -> SandboxLimits:
    """The limits a run would get now, found without running anything (its cgroups are made, then removed).

    Raises :class:`SandboxLimitsUnavailable` as :func:`run_sandboxed` would: the launch flow
    asks before it attests, so a node that cannot bound a sandbox is never given the keys.
    """
    cgroups, applied = await _bounded_cgroups(limits or ResourceLimits(), host_uid, policy)
    await remove_cgroups(cgroups.paths)
    return applied


async def run_sandboxed(
    root: Path,
    spec: RunSpec,
    limits: ResourceLimits | None = None,
    *,
    on_start: OnStart | None = None,
    bwrap: str = "bwrap",
    host_uid: int | None = None,
    policy: LimitPolicy = LimitPolicy(),
) -> RunResult:
    """Run ``spec`` in a bubblewrap sandbox over ``root``; returns how it ended.

    ``on_start`` is awaited once the process exists (the launch flow publishes
    ``workload.running`` there). The pids and memory limits are per-run cgroups (v2 under
    the policy's delegated cgroup or the runner's own cgroup, else v1; see :mod:`.cgroups`);
    where they cannot bound the sandbox as a whole, the run is refused with
    :class:`SandboxLimitsUnavailable` unless the policy is best-effort.
    With ``host_uid`` (a root runner:
    :func:`~ccpipe.enclave_runner.sandbox.host_user.unprivileged_uid`) the root is handed over
    to that uid and bwrap runs as it, so the sandbox holds no host privilege at all; every
    directory above ``root`` must then be traversable (mode ``o+x``).
    Raises :class:`SandboxUnavailable` when bwrap is missing and
    :class:`SandboxError` when bwrap itself cannot set the sandbox up (its message is kept);
    a workload that fails or times out is a result, not an error.
    """
    limits = limits or ResourceLimits()
    binary = shutil.which(bwrap)
    if binary is None:
        raise SandboxUnavailable(f"bubblewrap ({bwrap}) is not installed")
    prepare_root(root, spec)
    if host_uid is not None:
        await asyncio.to_thread(hand_over, root, host_uid)
    log = BoundedLog(limits.log_cap_bytes)
    cgroups, applied = await _bounded_cgroups(limits, host_uid, policy)
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *bwrap_argv(root, spec, bwrap=binary),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=child_setup(limits, cgroups.paths, host_uid), start_new_session=True,
            env={"PATH": DEFAULT_PATH},
        )
    except BaseException:
        await remove_cgroups(cgroups.paths)
        raise
    try:
        return await _supervise(proc, log, limits, start, applied, on_start)
    finally:
        await remove_cgroups(cgroups.paths)


async def _supervise(
    proc: asyncio.subprocess.Process, log: BoundedLog, limits: ResourceLimits, start: float,
    applied: SandboxLimits, on_start: OnStart | None,
) -> RunResult:
    """Feed the log, enforce the wall clock, and turn the end of the process into a result."""
    assert proc.stdout is not None

    async def pump() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            log.feed(chunk)

    timed_out = False
    pumping = asyncio.ensure_future(pump())
    try:
        if on_start is not None:
            await on_start(applied)  # if this raises (the bus is down), the finally below still kills the workload
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=limits.wall_clock_s)
    except TimeoutError:
        timed_out = True
    except BaseException:
        pumping.cancel()
        raise
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    try:
        await asyncio.wait_for(pumping, timeout=5.0)
    except TimeoutError:
        pumping.cancel()  # a grandchild outside the group kept the pipe open
    duration = time.monotonic() - start
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    exit_code = 128 - code if code < 0 else code
    note = f"killed after the wall-clock limit of {limits.wall_clock_s:g} s" if timed_out else None
    data = log.finish(note)
    if exit_code == 1 and data.startswith(b"bwrap: "):
        raise SandboxError(f"bubblewrap could not start the workload: {data.decode(errors='replace').strip()}")
    return RunResult(
        exit_code=TIMEOUT_EXIT_CODE if timed_out else exit_code,
        duration_s=duration,
        log=data,
        log_digest="sha256:" + hashlib.sha256(data).hexdigest(),
        log_truncated=log.dropped > 0,
        dropped_bytes=log.dropped,
        timed_out=timed_out,
        limits=applied,
    )
