"""The bubblewrap sandbox: image config honoured, isolation, limits, bounded log, timeout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ccpipe.enclave_runner.errors import SandboxError, SandboxLimitsUnavailable
from ccpipe.enclave_runner.image import RunConfig, run_config
from ccpipe.enclave_runner.sandbox import cgroups, host_user
from ccpipe.enclave_runner.sandbox.limits import ResourceLimits
from ccpipe.enclave_runner.sandbox.run import TIMEOUT_EXIT_CODE, LimitPolicy, check_limits, run_sandboxed
from ccpipe.enclave_runner.sandbox.spec import RunSpec, run_spec
from ccpipe.schemas.events import LimitKind, SandboxLimits

BUSYBOX = shutil.which("busybox")
# scripts/install-system-deps.sh (run by ./run and .ci/run) installs both; a missing one is a failure.
assert BUSYBOX is not None and shutil.which("bwrap") is not None, "busybox-static and bubblewrap must be installed"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A minimal image root: a static busybox as /bin/sh, an /etc/passwd with one user."""
    r = tmp_path / "root"
    (r / "bin").mkdir(parents=True)
    assert BUSYBOX is not None
    shutil.copy2(BUSYBOX, r / "bin" / "busybox")
    os.symlink("busybox", r / "bin" / "sh")
    (r / "etc").mkdir()
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    return r


def sh(script: str, **kw: object) -> RunSpec:
    return RunSpec(argv=("/bin/sh", "-c", script), env=(("PATH", "/bin"),), **kw)  # type: ignore[arg-type]


async def test_runner_sandbox_runs_image_config(root: Path) -> None:
    config = run_config({"config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ['echo "$GREETING from $(busybox pwd) as $(busybox id -u):$(busybox id -g)"'],
        "Env": ["GREETING=hi", "PATH=/bin"], "WorkingDir": "/app", "User": "app:staff",
    }})
    spec = run_spec(root, config)
    assert spec.uid == 1234 and spec.gid == 50 and spec.workdir == "/app"
    result = await run_sandboxed(root, spec)
    assert result.exit_code == 0, result.log
    assert result.log == b"hi from /app as 1234:50\n"
    assert result.log_digest == "sha256:" + hashlib.sha256(result.log).hexdigest()
    assert not result.timed_out and not result.log_truncated


async def test_runner_sandbox_exit_code_and_runner_env_not_leaked(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCPIPE_SECRET", "do-not-leak")
    result = await run_sandboxed(root, sh("busybox env; exit 7"))
    assert result.exit_code == 7
    assert b"do-not-leak" not in result.log and b"PATH=/bin" in result.log


async def test_runner_sandbox_isolation(root: Path) -> None:
    script = (
        "echo x > /bin/new 2>/dev/null && echo ROOT-WRITABLE;"
        "echo t > /tmp/t && busybox cat /tmp/t;"
        "busybox ls /dev | busybox tr '\\n' ' '; echo;"
        "busybox hostname; echo pid=$$"
    )
    result = await run_sandboxed(root, sh(script, uid=1000, gid=1000))
    out = result.log.decode()
    assert "ROOT-WRITABLE" not in out and not (root / "bin/new").exists()
    assert "t\n" in out
    assert "sda" not in out and "null" in out
    lines = out.splitlines()
    assert "ccpipe" in lines
    assert int(lines[-1].removeprefix("pid=")) <= 3  # a private pid namespace
    assert not (root / "tmp" / "t").exists()  # /tmp is a private tmpfs


async def test_runner_sandbox_network_only_when_asked(root: Path) -> None:
    without = await run_sandboxed(root, sh("busybox ip -o link | busybox wc -l"))
    with_net = await run_sandboxed(root, sh("busybox ip -o link | busybox wc -l", network=True))
    host_links = len(os.listdir("/sys/class/net"))
    assert int(without.log) == 1
    assert int(with_net.log) == host_links


async def test_runner_sandbox_bounded_log(root: Path) -> None:
    result = await run_sandboxed(root, sh("busybox yes 0123456789 | busybox head -c 200000"),
                                 ResourceLimits(log_cap_bytes=1000))
    assert result.log_truncated and result.dropped_bytes == 199_000
    assert result.log.startswith(b"0123456789\n" * 90)
    assert b"output truncated at 1000 bytes; 199000 more bytes dropped" in result.log
    assert result.log_digest == "sha256:" + hashlib.sha256(result.log).hexdigest()


async def test_runner_sandbox_wall_clock_timeout(root: Path) -> None:
    result = await run_sandboxed(root, sh("echo started; busybox sleep 30"), ResourceLimits(wall_clock_s=1.0))
    assert result.timed_out and result.exit_code == TIMEOUT_EXIT_CODE
    assert 0.9 < result.duration_s < 10
    assert result.log.startswith(b"started\n") and b"wall-clock limit of 1 s" in result.log


async def test_runner_sandbox_cpu_and_memory_limits(root: Path) -> None:
    cpu = await run_sandboxed(root, sh("while :; do :; done"), ResourceLimits(cpu_seconds=1, wall_clock_s=20))
    assert not cpu.timed_out and cpu.exit_code in (128 + 24, 128 + 9)  # SIGXCPU, then SIGKILL at the hard limit
    big = "busybox dd if=/dev/zero of=/dev/null bs=300M count=1 2>/dev/null; echo $?"
    mem = await run_sandboxed(root, sh(big), ResourceLimits(memory_bytes=128 << 20))
    assert mem.log.strip() != b"0"  # a 300 MB buffer cannot be allocated under a 128 MiB limit
    assert (await run_sandboxed(root, sh(big), ResourceLimits(memory_bytes=1024 << 20))).log.strip() == b"0"


async def test_runner_sandbox_on_start_called_once(root: Path) -> None:
    calls: list[SandboxLimits] = []

    async def started(applied: SandboxLimits) -> None:
        calls.append(applied)

    result = await run_sandboxed(root, sh("true"), on_start=started)
    assert calls == [result.limits]


async def test_runner_sandbox_missing_entrypoint_is_an_error(root: Path) -> None:
    with pytest.raises(SandboxError, match="no-such-binary"):
        await run_sandboxed(root, RunSpec(argv=("/no-such-binary",)))
    with pytest.raises(SandboxError, match="neither an entrypoint nor a cmd"):
        run_spec(root, RunConfig())


async def test_runner_sandbox_process_limit(root: Path) -> None:
    """A fork bomb stops at the process limit (a pids cgroup where writable; RLIMIT_NPROC otherwise)."""
    bomb = "for i in $(busybox seq 40); do busybox sleep 2 & done; echo all-started"
    limited = await run_sandboxed(root, sh(bomb), ResourceLimits(nproc=15, wall_clock_s=20))
    # RLIMIT_NPROC does not bind root, so a root runner needs the pids cgroup (writable on these machines).
    assert limited.limits.pids in (LimitKind.CGROUP_V2, LimitKind.CGROUP_V1) or os.getuid() != 0
    assert b"can't fork" in limited.log and b"all-started" not in limited.log
    free = await run_sandboxed(root, sh(bomb), ResourceLimits(nproc=200, wall_clock_s=20))
    assert b"all-started" in free.log
    hierarchies = cgroups.own_hierarchies()
    for parent in (hierarchies.v1.get("pids"), hierarchies.unified):
        if parent is not None:  # each run's cgroup removed
            assert not list(parent.glob(f"{cgroups.RUN_PREFIX}{os.getpid()}-*"))


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_runner_sandbox_failed_on_start_kills_the_workload(root: Path) -> None:
    """If announcing the start fails (the bus is down), the workload must not keep running unobserved."""
    marker = f"ccpipe-orphan-{os.getpid()}-{id(root)}"

    async def bus_down(_: SandboxLimits) -> None:
        raise RuntimeError("bus down")

    with pytest.raises(RuntimeError, match="bus down"):
        await run_sandboxed(root, sh(f"busybox sleep 30; : {marker}"), on_start=bus_down)
    for _ in range(50):
        if not _processes_with(marker):
            break
        await asyncio.sleep(0.1)
    assert _processes_with(marker) == []


async def test_runner_sandbox_memory_limit_covers_all_processes(root: Path) -> None:
    """Four processes each under the per-process limit, together over it: the memory cgroup stops them."""
    hog = ("x=$(busybox head -c 90000000 /dev/zero | busybox tr '\\0' a); busybox sleep 2; "
           "echo kept ${#x}")
    script = f"for i in 1 2 3 4; do ( {hog} ) & done; wait"
    limited = await run_sandboxed(root, sh(script), ResourceLimits(memory_bytes=320 << 20, wall_clock_s=60))
    assert limited.limits.memory in (LimitKind.CGROUP_V2, LimitKind.CGROUP_V1), limited.limits
    roomy = await run_sandboxed(root, sh(script), ResourceLimits(memory_bytes=2048 << 20, wall_clock_s=60))
    assert roomy.log.count(b"kept 90000000") == 4, roomy.log
    assert limited.log.count(b"kept 90000000") < 4, limited.log


async def test_runner_sandbox_root_runner_runs_workload_as_unprivileged_host_uid(root: Path) -> None:
    """A root runner's sandbox runs as a fresh unassigned host uid, never as host root."""
    assert os.geteuid() == 0, "this test needs a root runner (CI runs as root)"
    base = Path("/dev/shm") / f"ccpipe-test-{os.getpid()}-{id(root)}"
    base.mkdir(mode=0o711)
    marker = f"ccpipe-uid-probe-{os.getpid()}-{id(root)}"
    try:
        image = base / "rootfs"
        shutil.copytree(root, image, symlinks=True)
        (image / "app").mkdir()
        (image / "app" / "secret").write_text("only-mine")
        os.chmod(image / "app" / "secret", 0o600)
        host_uid = host_user.unprivileged_uid()
        assert host_uid is not None and host_uid >= host_user.SANDBOX_UID_BASE
        seen: list[set[int]] = []

        async def probe(_applied: SandboxLimits) -> None:  # the workload's processes, seen from the host
            for _ in range(40):
                pids = _processes_with(marker)
                if pids:
                    break
                await asyncio.sleep(0.05)
            uids = set()
            for pid in pids:
                status = Path(f"/proc/{pid}/status").read_text()
                uids |= {int(x) for x in status.split("Uid:")[1].split()[:4]}
            seen.append(uids)

        script = f"busybox cat /app/secret; echo; busybox id -u; busybox sleep 1; : {marker}"
        result = await run_sandboxed(image, sh(script, uid=1000, gid=1000), host_uid=host_uid, on_start=probe)
        assert result.exit_code == 0, result.log
        assert result.log == b"only-mine\n1000\n"  # its own 0600 file, as uid 1000 inside
        assert seen == [{host_uid}]  # real, effective, saved, fs uid on the host: the fresh uid, not 0
        assert (image / "app" / "secret").stat().st_uid == host_uid
    finally:
        shutil.rmtree(base)


@pytest.fixture
def no_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that sees no cgroup filesystem mounted (as in a container without /sys/fs/cgroup)."""
    empty = tmp_path / "mountinfo"
    empty.write_text("")
    monkeypatch.setattr(cgroups, "PROC_SELF_MOUNTINFO", empty)


@pytest.mark.usefixtures("no_cgroups")
async def test_runner_sandbox_refuses_to_run_unbounded_unless_best_effort(root: Path) -> None:
    """No cgroup and a sandbox as host root: refused by default; with best-effort it runs and says `none`."""
    assert os.geteuid() == 0, "this test needs a root runner (CI runs as root)"
    started: list[SandboxLimits] = []

    async def on_start(applied: SandboxLimits) -> None:
        started.append(applied)

    with pytest.raises(SandboxLimitsUnavailable, match="a pids limit.*and a memory limit") as refused:
        await run_sandboxed(root, sh("echo ran"), on_start=on_start)
    with pytest.raises(SandboxLimitsUnavailable):  # what the launch asks before it attests
        await check_limits()
    assert "CCPIPE_SANDBOX_LIMITS=best-effort" in refused.value.hint
    assert refused.value.code == "runner.sandbox.limits" and started == []
    result = await run_sandboxed(root, sh("echo ran"), on_start=on_start, policy=LimitPolicy(best_effort=True))
    assert result.log == b"ran\n"
    assert started == [result.limits] == [SandboxLimits(pids=LimitKind.NONE, memory=LimitKind.RLIMIT)]


def test_runner_sandbox_removes_run_cgroups_that_dead_runners_left() -> None:
    """A runner killed with SIGKILL leaves its run cgroups behind; the next one removes them, not a live runner's."""
    parent = cgroups.own_hierarchies().v1.get("pids")
    assert parent is not None, "this machine has a writable v1 pids hierarchy (CI runs as root)"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = parent / f"{cgroups.RUN_PREFIX}{dead.pid}-1"
    live = parent / f"{cgroups.RUN_PREFIX}{os.getpid()}-1"
    stale.mkdir()
    live.mkdir()
    try:
        assert cgroups.sweep_stale_runs(parent) == [stale]
        assert not stale.exists() and live.exists()
    finally:
        for path in (stale, live):
            if path.exists():
                path.rmdir()
