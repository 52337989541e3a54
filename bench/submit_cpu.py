"""Benchmark: CPU seconds of one ``ccpipe submit`` (what the git hook runs on every push), with a peer.

Starts ``ccpipe up`` (the embedded default: nats-server, registry, KBS, audit log, every stage)
in a temporary data directory, makes the demo repository, then runs ``ccpipe submit REPO``
``--runs`` times and prints the median CPU seconds (user + system, the command and every
process it waited for, git included) of one submit.

Peer, measured in the same run: ``git push`` of one new commit to a local bare repository
without a hook, the part of a push that is git's own.

Usage: ``.venv/bin/python bench/submit_cpu.py [--runs 15]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccpipe.pipeline.cli.demo_repository import make_demo_repository

ROOT = Path(__file__).resolve().parents[1]
CCPIPE = [sys.executable, "-m", "ccpipe"]


def environment(data_dir: Path) -> dict[str, str]:
    """The environment of every child: this tree's ccpipe, the data directory, git without the user's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CCPIPE_"))}
    env.update(CCPIPE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), GIT_CONFIG_GLOBAL=os.devnull,
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.org",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.org")
    return env


def cpu_seconds(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    """User + system CPU seconds of ``cmd`` and the children it waited for; raises on a non-zero exit."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        said = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {said}")
    return usage.ru_utime + usage.ru_stime


def start_up(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ccpipe up`` in the background, once its endpoints are written (services answering)."""
    up = subprocess.Popen([*CCPIPE, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (data_dir / "endpoints.json").exists():
        if up.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("ccpipe up did not start (run it by hand to see why)")
        time.sleep(0.2)
    time.sleep(2)  # endpoints.json is written before the stages after it; let the start settle
    return up


def make_repositories(root: Path, data_dir: Path, env: dict[str, str]) -> Path:
    """The demo's working repository (a shell script on a busybox base), with a second remote
    ``peer``: a bare repository without hooks, for the peer's pushes."""
    _, work = make_demo_repository(root / "demo", data_dir)
    peer = root / "peer.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(peer)], env=env, check=True)
    for args in (["remote", "add", "peer", str(peer)], ["push", "-q", "peer", "main"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True)
    return work


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="submits and pushes measured (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccpipe-submit-cpu-") as tmp:
        root = Path(tmp)
        env = environment(root / "data")
        work = make_repositories(root, root / "data", env)
        up = start_up(root / "data", env)
        try:
            submits, pushes = [], []
            for i in range(args.runs):
                submits.append(cpu_seconds([*CCPIPE, "submit", str(work)], env))
                (work / "app" / "hello.sh").write_text(f"#!/bin/sh\necho hi {i}\n")
                subprocess.run(["git", "commit", "-q", "-am", f"c{i + 1}"], cwd=work, env=env, check=True)
                pushes.append(cpu_seconds(["git", "push", "-q", "peer", "main"], env, cwd=work))
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)
    print(f"runs: {args.runs}")
    print(f"ccpipe submit   median CPU {statistics.median(submits):.3f} s  (min {min(submits):.3f}, "
          f"max {max(submits):.3f})")
    print(f"git push (peer) median CPU {statistics.median(pushes):.3f} s  (min {min(pushes):.3f}, "
          f"max {max(pushes):.3f})")


if __name__ == "__main__":
    main()
