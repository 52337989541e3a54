"""Soak: many workloads through one ``ccpipe up``; memory of every process, disk and throughput.

Starts ``ccpipe up`` (the embedded default: nats-server, docker-registry, KBS workers, audit log
and API, every stage, one emulated SEV-SNP runner node) in a temporary data directory, makes
the demo repository (a shell script on a busybox base), and submits ``COUNT`` workloads of it
(default 1000), at most ``--in-flight`` unfinished at once, as the git hook would (a signed
``submitted`` event per workload). Every ``--every`` ended workloads (``workload.exited`` or
``failed``) it prints the RSS of every process of ``ccpipe up`` and its children, and the size
of the data directory; at the end, workloads per minute and how many exited or failed.

The figure to hold (issue 17): RSS of ``ccpipe up`` and of a KBS worker within 20 % of what it
was after the first 50 workloads (it once went from 95 MB to 813 MB after 200).

With ``--split`` the components run as one ``ccpipe serve`` process each beside ``ccpipe up --only
nats,registry`` (as on several hosts, here sharing one data directory), so the RSS of each component,
the KBS's included, is printed on its own line.

Usage: ``.venv/bin/python bench/soak.py [COUNT] [--in-flight 20] [--every 100] [--split]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.cli.common import jetstream
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.reader import iter_events
from ccpipe.pipeline.servers import free_port
from ccpipe.pipeline.services import registry_password_file
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.source_bundles import pipeline_submission
from ccpipe.pipeline.trigger import resolve_push
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.events import EventType, Failed

ROOT = Path(__file__).resolve().parents[1]
END_TYPES = (EventType.WORKLOAD_EXITED, EventType.FAILED)


def children(pid: int) -> Iterator[int]:
    """``pid`` and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    todo = [pid]
    while todo:
        current = todo.pop()
        yield current
        todo.extend(parents.get(current, []))


def describe(pid: int) -> tuple[str, int] | None:
    """A short name of the process (its command line) and its RSS in bytes, or None once it is gone."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        status = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return None
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    words = [a.decode(errors="replace") for a in argv if a]
    program = Path(words[0]).name if words else "?"
    if program.startswith("python"):
        words = words[1:]
        if words[:2] == ["-m", "ccpipe"]:
            words = ["ccpipe", *words[2:]]
        elif words and words[0] == "-c":
            words = ["python -c", "multiprocessing child" if "multiprocessing" in " ".join(words) else words[1][:40]]
    else:
        words = [program, *words[1:2]]
    return " ".join(words)[:60], rss


def disk_usage(root: Path) -> int:
    """Bytes of the regular files below ``root``; files and directories that vanish meanwhile are skipped."""
    total = 0
    for folder, _, files in os.walk(root):  # os.walk skips directories it cannot list
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def memory_report(roots: list[int], data_dir: Path, ended: int) -> None:
    """One block of output: RSS of each process of ``ccpipe up`` (and of the served components) and
    their children, and the data directory's size."""
    rows = [(pid, d) for pid in sorted({p for root in roots for p in children(root)})
            if (d := describe(pid)) is not None]
    total = sum(rss for _, (_, rss) in rows)
    disk = disk_usage(data_dir)
    print(f"after {ended} workloads: {len(rows)} processes, RSS total {total / 2**20:.0f} MB, "
          f"data dir {disk / 2**20:.0f} MB", flush=True)
    for pid, (name, rss) in rows:
        print(f"  {pid:>7}  {rss / 2**20:7.1f} MB  {name}", flush=True)


SERVED = ("kbs", "audit", "build", "attest", "sign", "push", "schedule", "runner")
"""With ``--split``: one ``ccpipe serve`` process per component, the services the stages need first."""


def start_up(data_dir: Path, only: str | None = None) -> subprocess.Popen[bytes]:
    """``ccpipe up`` (``--only`` those services) in the background, once its endpoints are up."""
    env = {**os.environ, "CCPIPE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    log = (data_dir.parent / "up.log").open("wb")
    argv = [sys.executable, "-m", "ccpipe", "up", *(["--only", only] if only else [])]
    up = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not (data_dir / "endpoints.json").exists() or "Press Ctrl-C" not in (data_dir.parent / "up.log").read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ccpipe up did not start:\n{(data_dir.parent / 'up.log').read_text()[-2000:]}")
        time.sleep(0.3)
    return up


def start_served(data_dir: Path) -> list[subprocess.Popen[bytes]]:
    """One ``ccpipe serve COMPONENT`` per component beside ``up --only nats,registry``, once each is ready."""
    endpoints = json.loads((data_dir / "endpoints.json").read_text())
    kbs_port = free_port()
    env = {**os.environ, "CCPIPE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT),
           "CCPIPE_NATS_URL": endpoints["nats_url"], "CCPIPE_REGISTRY": endpoints["registry"],
           "CCPIPE_REGISTRY_USERNAME": "ccpipe-push",
           "CCPIPE_REGISTRY_PASSWORD_FILE": str(registry_password_file(data_dir, "push")),
           "CCPIPE_KBS_PORT": str(kbs_port), "CCPIPE_KBS_URL": f"http://127.0.0.1:{kbs_port}",
           "CCPIPE_ALLOW_EMULATED": "true"}
    served = []
    for component in SERVED:
        log_path = data_dir.parent / f"serve-{component}.log"
        served.append(subprocess.Popen([sys.executable, "-m", "ccpipe", "serve", component], env=env,
                                       stdout=log_path.open("wb"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while not any(m in log_path.read_text(errors="replace") for m in ("ccpipe serves ", "runner node ")):
            if served[-1].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ccpipe serve {component} did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
    return served


async def soak(settings: Settings, repo: Path, roots: list[int], args: argparse.Namespace) -> None:
    """Submit, count ends, report every ``args.every`` ends."""
    ended: dict[str, str] = {}
    failures: Counter[str] = Counter()
    progress = asyncio.Event()

    async def follow(js: JetStreamContext) -> None:
        last_seq = 0
        while True:  # a request that times out on a loaded machine resumes the reading, never ends it
            try:
                async for stored in iter_events(js, follow=True, start_seq=last_seq + 1):
                    last_seq = stored.seq
                    event = stored.event
                    if event is None or event.type not in END_TYPES or event.workload_id in ended:
                        continue
                    if isinstance(event.payload, Failed):
                        failures[f"{event.payload.reason.code}: {event.payload.reason.message[:100]}"] += 1
                    ended[event.workload_id] = event.type.value
                    progress.set()
            except NatsTimeoutError as exc:
                print(f"following the trail after seq {last_seq}: {exc!r}; resuming", flush=True)

    # as the hook submits (the submit identity) and as ``ccpipe events`` reads (read-only)
    async with jetstream(settings, "ccpipe-soak-submit", Component.SUBMIT) as submit_js, \
            jetstream(settings, "ccpipe-soak-follow") as read_js:
        follower = asyncio.create_task(follow(read_js))
        publisher = EventPublisher(submit_js, signer=event_signer(settings.data_dir))
        push = resolve_push(repo, None)
        milestones = sorted({m for m in (50, *range(args.every, args.count + 1, args.every)) if m <= args.count})
        submitted, start = 0, time.monotonic()
        memory_report(roots, settings.data_dir, 0)
        while len(ended) < args.count:
            while submitted < args.count and submitted - len(ended) < args.in_flight:
                await publisher.publish(await pipeline_submission(submit_js, settings.data_dir, push))
                submitted += 1
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), timeout=args.stall_s)
            except TimeoutError:
                if follower.done():  # say what stopped the counting, not that nothing ended
                    follower.result()
                raise SystemExit(f"no workload ended for {args.stall_s:.0f} s ({len(ended)} of {submitted} ended); "
                                 f"see {settings.data_dir.parent / 'up.log'}") from None
            if milestones and len(ended) >= milestones[0]:
                milestones = [m for m in milestones if m > len(ended)]
                memory_report(roots, settings.data_dir, len(ended))
        minutes = (time.monotonic() - start) / 60
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    exited = sum(1 for t in ended.values() if t == EventType.WORKLOAD_EXITED.value)
    print(f"{len(ended)} workloads in {minutes:.1f} min: {len(ended) / minutes:.0f} workloads per minute; "
          f"{exited} exited, {len(ended) - exited} failed", flush=True)
    for why, n in failures.most_common():
        print(f"  failed {n}x  {why}", flush=True)


def main() -> None:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", nargs="?", type=int, default=1000, help="workloads to run (default 1000)")
    parser.add_argument("--in-flight", type=int, default=20, help="unfinished workloads at most (default 20)")
    parser.add_argument("--every", type=int, default=100, help="report memory every N ended workloads (100)")
    parser.add_argument("--stall-s", type=float, default=180.0, help="give up when nothing ends this long (180)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    parser.add_argument("--split", action="store_true",
                        help="run each component as its own 'ccpipe serve' beside 'ccpipe up --only nats,registry' "
                             "(RSS per component, a KBS process of its own) instead of one 'ccpipe up'")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ccpipe-soak-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    settings = load_settings(data_dir=data_dir)
    _, work = make_demo_repository(tmp / "repo", data_dir)
    up = start_up(data_dir, "nats,registry" if args.split else None)
    processes = [up]
    try:
        if args.split:
            processes += start_served(data_dir)
        asyncio.run(soak(settings, work, [p.pid for p in processes], args))
    finally:
        for proc in reversed(processes):  # the components first, NATS and the registry last
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
