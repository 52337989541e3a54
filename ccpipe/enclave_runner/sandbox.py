"""Run a workload from its unpacked root with bubblewrap, bounded in time, resources and output.

The sandbox (:func:`bwrap_argv`, pure):

* the unpacked root, read-only, as ``/``; a private ``/proc``, a minimal ``/dev`` (null, zero,
  full, random, urandom, tty, pts, shm) and a private tmpfs ``/tmp``;
* ``--unshare-all`` (user, mount, pid, ipc, uts, cgroup and network namespaces); the network
  namespace is shared only when the workload asks for it (``network=True``);
* the image config's user (``uid[:gid]``, or names looked up in the image's ``/etc/passwd`` and
  ``/etc/group``), workdir, environment (nothing of the runner's own environment leaks:
  ``--clearenv``), entrypoint + cmd; every capability dropped, a new session (no terminal
  injection), ``--die-with-parent``.

Limits (:class:`ResourceLimits`) are set with ``setrlimit`` in the child before ``bwrap``
executes, so the sandbox inherits them: CPU seconds, address space, open files, processes,
file size. Where the runner may create cgroups (v1 ``pids`` and ``memory`` hierarchies), each
run also gets a pids cgroup (``pids.max`` = the process limit: the kernel does not apply
RLIMIT_NPROC to root) and a memory cgroup (``memory.limit_in_bytes`` = the memory limit, for
all its processes together), removed after the run. A wall-clock timeout kills the whole process group.
stdout and stderr go to one pipe (so their order is kept) and into a bounded log: beyond
``log_cap_bytes`` the output is read and dropped, and the log ends with a line saying how much
was dropped. The result carries the exit
code, the duration and the SHA-256 of the log exactly as kept.

Imports the runner's own modules only; no NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.errors import SandboxError, SandboxUnavailable
from ccpipe.enclave_runner.image import RunConfig
from ccpipe.enclave_runner.rootfs import make_dirs_in_root, read_in_root

MiB = 1 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_UID_BASE = 200_000
SANDBOX_UID_SPAN = 1 << 20
"""Per-launch host uids of a root runner's sandboxes: [200000, 200000 + 2^20), mapped to no user."""
TIMEOUT_EXIT_CODE = 137
"""Exit code reported when the wall-clock timeout killed the workload (128 + SIGKILL)."""
_MOUNT_POINTS = ("proc", "dev", "tmp")


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


@dataclass(frozen=True)
class RunSpec:
    """What to run inside the sandbox."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    uid: int = 0
    gid: int = 0
    network: bool = False
    hostname: str = "ccpipe"


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


def _lookup(table: bytes | None, name: str, field_index: int) -> int | None:
    """Numeric id of ``name`` in a passwd/group file (``name:x:uid:gid:…``)."""
    for line in (table or b"").decode("utf-8", "replace").splitlines():
        cols = line.split(":")
        if len(cols) > field_index and cols[0] == name and cols[field_index].isdigit():
            return int(cols[field_index])
    return None


def resolve_user(root: Path, user: str) -> tuple[int, int]:
    """``(uid, gid)`` of the image config's ``User`` (``""``, ``uid``, ``uid:gid``, names).

    Names are looked up in the image's own ``/etc/passwd`` / ``/etc/group``; raises
    :class:`SandboxError` when a name is not there.
    """
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    passwd = None
    if name.isdigit():
        uid = int(name)
        gid_default = 0
    else:
        passwd = read_in_root(root, "etc/passwd")
        found = _lookup(passwd, name, 2)
        if found is None:
            raise SandboxError(f"image user {name!r} is not in the image's /etc/passwd", code="runner.sandbox.user")
        uid = found
        gid_default = _lookup(passwd, name, 3) or 0
    if not group:
        return uid, gid_default
    if group.isdigit():
        return uid, int(group)
    gid = _lookup(read_in_root(root, "etc/group"), group, 2)
    if gid is None:
        raise SandboxError(f"image group {group!r} is not in the image's /etc/group", code="runner.sandbox.user")
    return uid, gid


def run_spec(root: Path, config: RunConfig, *, network: bool = False) -> RunSpec:
    """The :class:`RunSpec` of an image config; raises :class:`SandboxError` without a command."""
    argv = config.argv
    if not argv:
        raise SandboxError("the image has neither an entrypoint nor a cmd", code="runner.sandbox.no_command",
                           hint="set entrypoint or cmd in the workload's ccpipe.toml [build] table")
    env: dict[str, str] = {}
    for item in config.env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root" if not config.user or config.user.split(":")[0] in ("0", "root") else "/")
    uid, gid = resolve_user(root, config.user)
    workdir = config.workdir if config.workdir.startswith("/") else "/" + config.workdir
    return RunSpec(tuple(argv), tuple(env.items()), workdir, uid, gid, network)


def bwrap_argv(root: Path, spec: RunSpec, *, bwrap: str = "bwrap") -> list[str]:
    """The ``bwrap`` command line that runs ``spec`` with ``root`` as ``/`` (see the module docstring)."""
    args = [bwrap, "--unshare-all"]
    if spec.network:
        args.append("--share-net")
    args += [
        "--die-with-parent", "--new-session",
        "--ro-bind", str(root), "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--uid", str(spec.uid), "--gid", str(spec.gid),
        "--hostname", spec.hostname,
        "--chdir", spec.workdir,
        "--cap-drop", "ALL",
        "--clearenv",
    ]
    for key, value in spec.env:
        args += ["--setenv", key, value]
    return [*args, "--", *spec.argv]


def prepare_root(root: Path, spec: RunSpec) -> None:
    """Create the mount points and the workdir inside the (still writable) root before it is bound read-only.

    Raises :class:`SandboxError` when the image has a non-directory where one is needed.
    """
    from ccpipe.enclave_runner.errors import UnpackError  # the rootfs helpers raise the unpack family

    for path in (*_MOUNT_POINTS, spec.workdir):
        try:
            make_dirs_in_root(root, path)
        except UnpackError as exc:
            raise SandboxError(f"cannot prepare {path} in the image root: {exc.message}",
                               code="runner.sandbox.root") from exc


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


def _pids_cgroup(limit: int, root: Path = PIDS_CGROUP_ROOT) -> Path | None:
    """A pids cgroup capped at ``limit`` tasks, or None when the runner cannot create one.

    RLIMIT_NPROC is not enforced for a runner running as root (the kernel exempts root's user),
    so where the pids controller is writable the cgroup is the limit that holds.
    """
    return _make_cgroup(root / _own_cgroup("pids").lstrip("/"), {"pids.max": str(limit)})


def _memory_cgroup(limit: int) -> Path | None:
    """A memory cgroup below this process's own, capped at ``limit`` bytes for the whole sandbox.

    RLIMIT_AS bounds each process; the cgroup bounds their sum (the kernel's OOM killer acts
    inside it). None when the memory hierarchy is not writable.
    """
    parent = CGROUP_V1 / "memory" / _own_cgroup("memory").lstrip("/")
    return _make_cgroup(parent, {"memory.limit_in_bytes": str(limit)})


async def _remove_cgroups(paths: list[Path]) -> None:
    """Remove a run's cgroups once their last task is gone (it may take a moment to be reaped)."""
    for path in paths:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                await asyncio.sleep(0.02)


def _set_limits(limits: ResourceLimits, cgroups: list[Path], host_uid: int | None = None) -> Callable[[], None]:
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


def hand_over(root: Path, host_uid: int) -> None:
    """Give the unpacked root to ``host_uid`` (links themselves, never their targets).

    The sandbox then runs as that unprivileged host uid, and the workload's uid inside the
    user namespace maps onto it, so the workload owns the image's files as it does with a
    runner that is not root.
    """
    os.lchown(root, host_uid, host_uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), host_uid, host_uid)


def unprivileged_uid() -> int | None:
    """A fresh unassigned host uid for one sandbox when the runner is root, else None (run as the runner).

    Per launch, so concurrent workloads never share a uid (nor an RLIMIT_NPROC count).
    """
    if os.geteuid() != 0:
        return None
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)


class _BoundedLog:
    def __init__(self, cap: int) -> None:
        self.cap, self.buf, self.dropped = cap, bytearray(), 0

    def feed(self, data: bytes) -> None:
        room = self.cap - len(self.buf)
        self.buf += data[: max(room, 0)]
        self.dropped += max(len(data) - max(room, 0), 0)

    def finish(self, note: str | None) -> bytes:
        if self.dropped:
            msg = f"output truncated at {self.cap} bytes; {self.dropped} more bytes dropped"
            self.buf += f"\n[ccpipe: {msg}]\n".encode()
        if note:
            self.buf += f"\n[ccpipe: {note}]\n".encode()
        return bytes(self.buf)


async def run_sandboxed(
    root: Path,
    spec: RunSpec,
    limits: ResourceLimits | None = None,
    *,
    on_start: Callable[[], Awaitable[None]] | None = None,
    bwrap: str = "bwrap",
    host_uid: int | None = None,
) -> RunResult:
    """Run ``spec`` in a bubblewrap sandbox over ``root``; returns how it ended.

    ``on_start`` is awaited once the process exists (the launch flow publishes
    ``workload.running`` there). With ``host_uid`` (a root runner: :func:`unprivileged_uid`)
    the root is handed over to that uid and bwrap runs as it, so the sandbox holds no host
    privilege at all; every directory above ``root`` must then be traversable (mode ``o+x``).
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
    log = _BoundedLog(limits.log_cap_bytes)
    cgroups = [c for c in (_pids_cgroup(limits.nproc), _memory_cgroup(limits.memory_bytes)) if c is not None]
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *bwrap_argv(root, spec, bwrap=binary),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_set_limits(limits, cgroups, host_uid), start_new_session=True, env={"PATH": DEFAULT_PATH},
        )
    except BaseException:
        await _remove_cgroups(cgroups)
        raise
    try:
        return await _supervise(proc, log, limits, start, on_start)
    finally:
        await _remove_cgroups(cgroups)


async def _supervise(
    proc: asyncio.subprocess.Process, log: _BoundedLog, limits: ResourceLimits, start: float,
    on_start: Callable[[], Awaitable[None]] | None,
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
            await on_start()  # if this raises (the bus is down), the finally below still kills the workload
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
    )


__all__ = [
    "ResourceLimits",
    "RunResult",
    "RunSpec",
    "bwrap_argv",
    "hand_over",
    "prepare_root",
    "resolve_user",
    "run_sandboxed",
    "run_spec",
    "unprivileged_uid",
]
