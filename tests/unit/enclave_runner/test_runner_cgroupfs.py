"""Finding the runner's cgroups and choosing a hierarchy per controller, over fake /proc files and fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.enclave_runner.sandbox import cgroups
from ccpipe.enclave_runner.sandbox.cgroupfs import (
    CgroupMount,
    Hierarchies,
    Membership,
    cgroup_dir,
    hierarchy_for,
    locate,
    parse_mountinfo,
    parse_proc_cgroup,
)
from ccpipe.enclave_runner.sandbox.limits import ResourceLimits
from ccpipe.schemas.events import LimitKind

HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/8ff7
2:cpu,cpuacct:/
0::/
"""
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
DEBIAN12_CGROUP = "0::/system.slice/ccpipe-runner.service\n"
DEBIAN12_MOUNTINFO = (
    "25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "28 25 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)


def test_runner_cgroupfs_hybrid_machine_uses_v1_for_pids_and_memory() -> None:
    membership = parse_proc_cgroup(HYBRID_CGROUP)
    assert membership == Membership("/", {"name=systemd": "/", "pids": "/", "memory": "/process_api/8ff7",
                                          "cpu": "/", "cpuacct": "/"})
    found = locate(membership, parse_mountinfo(HYBRID_MOUNTINFO))
    assert found.unified == Path("/sys/fs/cgroup/unified")
    assert found.v1["pids"] == Path("/sys/fs/cgroup/pids")
    assert found.v1["memory"] == Path("/sys/fs/cgroup/memory/process_api/8ff7")
    # the unified hierarchy there offers only hugetlb: both limits go to their v1 hierarchies
    offers = frozenset({"hugetlb"})
    assert hierarchy_for("pids", offers, found) is LimitKind.CGROUP_V1
    assert hierarchy_for("memory", offers, found) is LimitKind.CGROUP_V1


def test_runner_cgroupfs_unified_only_machine_uses_v2() -> None:
    found = locate(parse_proc_cgroup(DEBIAN12_CGROUP), parse_mountinfo(DEBIAN12_MOUNTINFO))
    assert found == Hierarchies(Path("/sys/fs/cgroup/system.slice/ccpipe-runner.service"), {})
    assert cgroups.delegated_base(found) == found.unified
    offers = frozenset({"cpu", "memory", "pids"})
    assert hierarchy_for("pids", offers, found) is LimitKind.CGROUP_V2
    assert hierarchy_for("memory", offers, found) is LimitKind.CGROUP_V2
    # a cgroup whose parent did not delegate memory: no memory cgroup anywhere
    assert hierarchy_for("memory", frozenset({"pids"}), found) is None


def test_runner_cgroupfs_runner_leaf_is_not_nested_again() -> None:
    """Once the runner moved itself into its leaf, runs still go beside that leaf, not below it."""
    found = Hierarchies(Path("/sys/fs/cgroup/runner.service") / cgroups.RUNNER_LEAF)
    assert cgroups.delegated_base(found) == Path("/sys/fs/cgroup/runner.service")
    assert cgroups.delegated_base(found, Path("/sys/fs/cgroup/given")) == Path("/sys/fs/cgroup/given")
    assert cgroups.delegated_base(Hierarchies()) is None


def test_runner_cgroupfs_mount_of_a_subtree_and_escaped_mount_points() -> None:
    mount = parse_mountinfo(r"50 1 0:40 /kubepods/pod1 /run/my\040cgroups rw - cgroup2 cgroup2 rw" "\n")[0]
    assert mount == CgroupMount(Path("/run/my cgroups"), "/kubepods/pod1", 2)
    assert cgroup_dir(mount, "/kubepods/pod1/ctr") == Path("/run/my cgroups/ctr")
    assert cgroup_dir(mount, "/kubepods/pod1") == Path("/run/my cgroups")
    assert cgroup_dir(mount, "/kubepods/pod10") is None  # a sibling with the same prefix is not inside
    assert cgroup_dir(mount, "/elsewhere") is None
    assert cgroup_dir(CgroupMount(Path("/sys/fs/cgroup"), "/", 2), "/../outside") is None  # above a cgroup ns


@pytest.mark.parametrize("text", ["", "garbage\n", "1:pids\n", "0::relative\n"])
def test_runner_cgroupfs_malformed_proc_cgroup_gives_nothing(text: str) -> None:
    assert parse_proc_cgroup(text) == Membership()


def _fake_v2(path: Path, offers: str, procs: str = "") -> Path:
    """A directory that looks like a v2 cgroup to the runner (plain files: writes always succeed)."""
    path.mkdir(parents=True)
    (path / "cgroup.controllers").write_text(offers + "\n")
    (path / "cgroup.subtree_control").write_text("")
    (path / "cgroup.procs").write_text(procs)
    return path


def test_runner_cgroupfs_run_cgroup_on_v2_gets_pids_and_memory_max(tmp_path: Path) -> None:
    base = _fake_v2(tmp_path / "runner.service", "cpu memory pids")
    run = cgroups.run_cgroups(ResourceLimits(nproc=64, memory_bytes=256 << 20),
                              hierarchies=Hierarchies(base, {"pids": tmp_path / "v1-pids"}))
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids"  # cpu is not asked for
    assert run.held == {"pids": LimitKind.CGROUP_V2, "memory": LimitKind.CGROUP_V2}  # v2 wins over v1
    [path] = run.paths
    assert path.parent == base and path.name.startswith(cgroups.RUN_PREFIX)
    assert (path / "pids.max").read_text() == "64"
    assert (path / "memory.max").read_text() == str(256 << 20)
    assert run.applied(sandbox_is_host_root=True).model_dump() == {"pids": "cgroup-v2", "memory": "cgroup-v2"}
    assert cgroups.missing_limits(run.applied(sandbox_is_host_root=True)) == []


def test_runner_cgroupfs_run_cgroups_on_v1_and_what_is_missing(tmp_path: Path) -> None:
    pids_dir, memory_dir = tmp_path / "pids", tmp_path / "memory"
    pids_dir.mkdir()
    memory_dir.mkdir()
    limits = ResourceLimits(nproc=10, memory_bytes=1 << 30)
    run = cgroups.run_cgroups(limits, hierarchies=Hierarchies(None, {"pids": pids_dir, "memory": memory_dir}))
    assert run.held == {"pids": LimitKind.CGROUP_V1, "memory": LimitKind.CGROUP_V1}
    assert [p.parent for p in run.paths] == [pids_dir, memory_dir]
    assert (run.paths[1] / "memory.limit_in_bytes").read_text() == str(1 << 30)
    nothing = cgroups.run_cgroups(limits, hierarchies=Hierarchies())
    as_root = nothing.applied(sandbox_is_host_root=True)
    assert (as_root.pids, as_root.memory) == (LimitKind.NONE, LimitKind.RLIMIT)
    assert [m.split(" (")[0] for m in cgroups.missing_limits(as_root)] == [
        "a pids limit", "a memory limit for the sandbox as a whole"]
    # a sandbox on its own unprivileged host uid is bounded in processes by RLIMIT_NPROC
    assert nothing.applied(sandbox_is_host_root=False).pids is LimitKind.RLIMIT


def test_runner_cgroupfs_unwritable_v2_base_falls_back_to_nothing(tmp_path: Path) -> None:
    """A cgroup the runner may not write (not delegated to it) yields no v2 cgroup and no error."""
    missing = tmp_path / "not-a-cgroup"
    assert cgroups.delegate(missing) == frozenset()
    run = cgroups.run_cgroups(ResourceLimits(), delegated=missing, hierarchies=Hierarchies())
    assert run.paths == [] and run.held == {}
