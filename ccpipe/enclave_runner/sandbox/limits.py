"""The bounds of one run, and the setup that applies them in the child before ``bwrap`` executes."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


@dataclass(frozen=True)
class ResourceLimits:
    """Bounds of one run."""

    cpu_seconds: int = 300
    memory_bytes: int = 2048 * MiB
    """Address space (RLIMIT_AS) of every process of the sandbox."""
    nofile: int = 1024
    nproc: int = 512
    fsize_bytes: int = 1024 * MiB
    """Largest file the workload may write (its /tmp is a tmpfs in memory)."""
    wall_clock_s: float = 600.0
    log_cap_bytes: int = 1 * MiB


def child_setup(limits: ResourceLimits, cgroups: list[Path], host_uid: int | None = None) -> Callable[[], None]:
    """The ``preexec_fn`` of the sandbox: join ``cgroups``, set the rlimits, then drop to ``host_uid``.

    The sandbox (``bwrap`` and everything it starts) inherits all three.
    """
    procs = [str(c / "cgroup.procs") for c in cgroups]

    def apply() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        for name in procs:
            with open(name, "w") as fh:
                fh.write(str(os.getpid()))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if host_uid is not None:  # last: joining the cgroups above needed the runner's privileges
            os.setgroups([])
            os.setgid(host_uid)
            os.setuid(host_uid)

    return apply
