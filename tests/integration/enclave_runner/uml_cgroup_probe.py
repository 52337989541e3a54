"""Run inside a user-mode Linux kernel by ``test_sandbox_cgroup_v2_uml.py``: the sandbox's pids and memory
limits, on a kernel whose only cgroup filesystem is the unified hierarchy (cgroup v2).

Writes one JSON document to ``argv[1]``: for each case, the limits the sandbox says it applied and
what the workload printed. The assertions are the host-side test's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ccpipe.enclave_runner.sandbox.limits import ResourceLimits
from ccpipe.enclave_runner.sandbox.run import run_sandboxed
from ccpipe.enclave_runner.sandbox.spec import RunSpec

FORK_BOMB = "for i in $(busybox seq 40); do busybox sleep 2 & done; echo all-started"
MEMORY_HOG = ("for i in 1 2 3 4; do ( x=$(busybox head -c 20000000 /dev/zero | busybox tr '\\0' a); "
              "busybox sleep 2; echo kept ${#x} ) & done; wait")
"""Four processes of ~20 MB each (the user-mode kernel makes bigger ones slow): 80 MB together."""
CASES = {
    "fork-bomb-limited": (FORK_BOMB, ResourceLimits(nproc=15, wall_clock_s=30)),
    "fork-bomb-free": (FORK_BOMB, ResourceLimits(nproc=200, wall_clock_s=30)),
    "memory-hog-limited": (MEMORY_HOG, ResourceLimits(memory_bytes=48 << 20, wall_clock_s=90)),
    "memory-hog-roomy": (MEMORY_HOG, ResourceLimits(memory_bytes=512 << 20, wall_clock_s=90)),
}


def image_root(base: Path) -> Path:
    """A minimal image: a static busybox as /bin/sh."""
    root = base / "root"
    (root / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    assert busybox is not None
    shutil.copy2(busybox, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return root


async def probe(out: Path) -> None:
    results: dict[str, object] = {"controllers": Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()}
    with tempfile.TemporaryDirectory() as scratch:
        root = image_root(Path(scratch))
        for name, (script, limits) in CASES.items():
            try:
                run = await run_sandboxed(root, RunSpec(argv=("/bin/sh", "-c", script), env=(("PATH", "/bin"),)),
                                          limits)
                results[name] = {"pids": run.limits.pids.value, "memory": run.limits.memory.value,
                                 "log": run.log.decode(errors="replace")[-2000:], "exit_code": run.exit_code}
            except Exception as exc:  # reported to the host-side test, which fails naming it
                results[name] = {"error": repr(exc)}
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(probe(Path(sys.argv[1])))
