"""The runner's tmpfs roots: one per data directory, gone when unused, swept when their owner died.

These use the real ``/dev/shm`` (a tmpfs on every Linux with glibc) and real processes: the
failure they guard against (one runner chmod-ing or removing another's root) only shows across
processes sharing one host.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from ccpipe.enclave_runner.workspace import SHM, _is_tmpfs, create_workspace, shm_root, sweep_stale_roots


def test_this_host_has_dev_shm_as_a_tmpfs() -> None:
    # what every test below relies on; a machine without it fails here rather than skipping them all
    assert SHM.is_dir() and _is_tmpfs(SHM), f"{SHM} is not a tmpfs"

ROOT = Path(__file__).resolve().parents[3]

RUNNER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from ccpipe.enclave_runner.workspace import create_workspace
    data_dir, traversable, rounds = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
    for i in range(rounds):
        ws = create_workspace(data_dir, f"launch-{i}-" + os.urandom(8).hex(), traversable=traversable)
        if ws.kind != "tmpfs":
            sys.exit(f"round {i}: fell back to {ws.path}")
        (ws.rootfs / "bin").mkdir(parents=True)
        (ws.rootfs / "bin" / "sh").write_text("x")
        time.sleep(0.002)
        # what the launch needs until the end: its root still there, reachable by the sandbox uid if asked
        if not (ws.rootfs / "bin" / "sh").is_file():
            sys.exit(f"round {i}: {ws.path} vanished")
        if traversable and not ws.others_can_traverse():
            sys.exit(f"round {i}: {ws.path} no longer reachable by another uid")
        ws.remove()
    print("ok")
""")

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ccpipe.enclave_runner.workspace import create_workspace
    ws = create_workspace(Path(sys.argv[1]), "held")
    print(ws.path, flush=True)
    time.sleep(600)
""")


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_runner_shm_root_per_data_dir_and_removed_when_unused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert shm_root(a) != shm_root(b) and shm_root(a) == shm_root(tmp_path / "x" / ".." / "a")
    first = create_workspace(a, "one")
    second = create_workspace(a, "two", traversable=True)
    other = create_workspace(b, "three")
    try:
        assert first.kind == second.kind == other.kind == "tmpfs"
        assert first.path.parent == second.path.parent == shm_root(a) and other.path.parent == shm_root(b)
        # the traversable launch of a changes nothing of b's root
        assert stat.S_IMODE(shm_root(b).stat().st_mode) == 0o700
        first.remove()
        assert shm_root(a).is_dir() and second.path.is_dir(), "a root in use was removed"
        first.remove()  # twice is harmless
        second.remove()
        assert not shm_root(a).exists(), "the root outlived its last workspace"
        assert other.path.is_dir()
    finally:
        for ws in (first, second, other):
            ws.remove()
    assert not shm_root(b).exists()


def test_runner_shm_two_runners_with_different_data_dirs_at_once(tmp_path: Path) -> None:
    """One runner's sandboxes need a traversable root, the other's not: neither breaks the other."""
    runners = [_python(RUNNER, str(tmp_path / "a"), "1", "300"), _python(RUNNER, str(tmp_path / "b"), "0", "300")]
    results = [r.communicate(timeout=120) for r in runners]
    for runner, (out, err) in zip(runners, results, strict=True):
        assert runner.returncode == 0 and out.strip() == "ok", err
    assert not shm_root(tmp_path / "a").exists() and not shm_root(tmp_path / "b").exists()


def test_runner_shm_root_of_a_killed_runner_is_swept(tmp_path: Path) -> None:
    held = _python(HOLD, str(tmp_path / "dead"))
    try:
        assert held.stdout is not None
        path = Path(held.stdout.readline().strip())
        assert path.parent == shm_root(tmp_path / "dead")
        live = create_workspace(tmp_path / "live", "mine")
        assert path.is_dir(), "the root of a live runner was swept"
        held.send_signal(signal.SIGKILL)
        held.wait(timeout=10)
        assert path.is_dir()  # nobody removed it: the runner died
        # the next launch of any data directory sweeps it; its own live root stays
        later = create_workspace(tmp_path / "other", "next")
        assert not shm_root(tmp_path / "dead").exists(), "a dead runner's root was not swept"
        assert live.path.is_dir() and later.path.is_dir()
        assert sweep_stale_roots() == []  # nothing left that nobody holds (the live ones are held)
        live.remove()
        later.remove()
    finally:
        held.kill()
        held.wait(timeout=10)
        if held.stdout is not None:
            held.stdout.close()
        if held.stderr is not None:
            held.stderr.close()
