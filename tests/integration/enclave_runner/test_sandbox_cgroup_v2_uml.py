"""The sandbox's pids and memory limits hold on cgroup v2 (issue 19, item 5), on a real kernel.

This machine binds pids and memory to cgroup v1 hierarchies, so the unified hierarchy cannot show
them here. The test boots a user-mode Linux kernel (Debian's ``user-mode-linux``: a Linux kernel
that runs as a process, no privileges or virtualisation needed) on this machine's own files
(hostfs), mounts cgroup2 as its only cgroup filesystem, and runs the sandbox there
(``uml_cgroup_probe.py``): a fork bomb and a memory hog, each with a tight and a roomy limit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
REPO = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("uml_cgroup_probe.py")
UML = shutil.which("linux.uml")
# scripts/install-system-deps.sh (run by ./run and .ci/run) installs it; a missing one is a failure.
assert UML is not None, "user-mode-linux must be installed (scripts/install-system-deps.sh)"
BOOT_TIMEOUT_S = 360


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Boot the kernel once, run the probe in it, and return what it wrote."""
    work = tmp_path_factory.mktemp("uml")
    out, log = work / "probe.json", work / "probe.log"
    init = work / "init.sh"
    init.write_text(f"""#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH={REPO} PYTHONDONTWRITEBYTECODE=1 TMPDIR=/dev/shm HOME=/dev/shm
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /run
cd {REPO} && {sys.executable} {PROBE} {out} > {log} 2>&1
echo o > /proc/sysrq-trigger
sleep 60
""")
    init.chmod(0o755)
    assert UML is not None
    # the kernel's console goes to a file; its own memory is 1 GiB of this machine's
    with (work / "console.log").open("wb") as console:
        subprocess.run([UML, "mem=1024M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
                        f"init={init}", "con=null", "con0=null,fd:1"], stdout=console, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, cwd=work, timeout=BOOT_TIMEOUT_S, check=False)
    assert out.exists(), f"the probe wrote nothing:\n{log.read_text() if log.exists() else '(no log)'}\n" \
                         f"{(work / 'console.log').read_text(errors='replace')[-3000:]}"
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def test_the_kernel_offers_pids_and_memory_on_the_unified_hierarchy_only(probed: dict[str, Any]) -> None:
    assert {"pids", "memory"} <= set(probed["controllers"])


def test_a_fork_bomb_stops_at_the_pids_limit_on_cgroup_v2(probed: dict[str, Any]) -> None:
    limited, free = probed["fork-bomb-limited"], probed["fork-bomb-free"]
    assert limited.get("pids") == "cgroup-v2", limited
    assert "can't fork" in str(limited["log"]) and "all-started" not in str(limited["log"]), limited
    assert "all-started" in str(free["log"]), free  # the control: the same bomb under a roomy limit


def test_a_memory_hog_of_several_processes_is_stopped_by_the_memory_limit_on_cgroup_v2(
        probed: dict[str, Any]) -> None:
    limited, roomy = probed["memory-hog-limited"], probed["memory-hog-roomy"]
    assert limited.get("memory") == "cgroup-v2", limited
    assert str(roomy["log"]).count("kept 20000000") == 4, roomy  # the control: all four fit in 512 MiB
    assert str(limited["log"]).count("kept 20000000") < 4, limited  # 48 MiB holds at most two
