"""Benchmark: the whole flow on a three-node JetStream cluster beside the single embedded server.

Runs ``ccpipe up`` twice in the same run, each in a fresh data directory: once on the embedded
default (one nats-server, streams and buckets R1) and once with ``--cluster 3`` (three
nats-servers with routes on loopback, every stream, bucket and object store R3, so each write
is acknowledged by a quorum). Both get the same load: ``COUNT`` workloads of the demo repository
submitted at ``--rate`` per second (as the git hook would: a signed ``submitted`` event each),
then followed on the trail until every one has ended.

Prints, for each, workloads per minute (first ``submitted`` to last end), the median and 95th
percentile of ``submitted`` → ``workload.running`` (the events' own timestamps) and the median of
each hop between them (where the time goes), then the ratio cluster / embedded. For
orientation (issue 16): 150 workloads over 100 s on the embedded
default ran with p50 0.57 s and p95 1.12 s.

Usage: ``.venv/bin/python bench/cluster_flow.py [COUNT] [--rate 1.5] [--order embedded,cluster]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.cli.common import jetstream
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.reader import iter_events
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.source_bundles import pipeline_submission
from ccpipe.pipeline.trigger import resolve_push
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.events import EventType

ROOT = Path(__file__).resolve().parents[1]
MODES = {"embedded": [], "cluster": ["--cluster", "3"]}
"""Each mode's extra ``ccpipe up`` arguments."""
END_TYPES = (EventType.WORKLOAD_EXITED, EventType.FAILED)
HOPS = (EventType.SUBMITTED, EventType.BUILT, EventType.SIGNED, EventType.PUSHED, EventType.SCHEDULED,
        EventType.WORKLOAD_RUNNING)
"""The flow's stages in order; the median time between consecutive ones is printed per mode."""


@dataclass
class Journeys:
    """What the trail said about the benchmark's workloads."""

    submitted: dict[str, datetime] = field(default_factory=dict)
    running: dict[str, datetime] = field(default_factory=dict)
    ended: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    hops: dict[str, dict[EventType, datetime]] = field(default_factory=dict)
    """Each workload's first event of every :data:`HOPS` type: where the time goes."""


def start_up(data_dir: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    """``ccpipe up`` (with ``extra`` arguments) in the background, once it says it is ready."""
    env = {**os.environ, "CCPIPE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    log_path = data_dir.parent / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "ccpipe", "up", *extra], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "Press Ctrl-C" not in log_path.read_text(errors="replace"):
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise SystemExit(f"ccpipe up {' '.join(extra)} did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.3)
    return up


def stop_up(up: subprocess.Popen[bytes]) -> None:
    """Stop ``ccpipe up`` as Ctrl-C does (it stops its servers), killing it if it hangs."""
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=90)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()


async def run_load(settings: Settings, repo: Path, count: int, rate: float, stall_s: float) -> Journeys:
    """Submit ``count`` workloads at ``rate`` per second and follow the trail until all ended."""
    seen = Journeys()
    progress = asyncio.Event()

    async def follow(js: JetStreamContext) -> None:
        last_seq = 0
        while True:  # a request that times out on a loaded machine resumes the reading
            try:
                async for stored in iter_events(js, follow=True, start_seq=last_seq + 1):
                    last_seq = stored.seq
                    event = stored.event
                    if event is None:
                        continue
                    wl = event.workload_id
                    if event.type in HOPS:
                        seen.hops.setdefault(wl, {}).setdefault(event.type, event.occurred_at)
                    if event.type is EventType.SUBMITTED:
                        seen.submitted.setdefault(wl, event.occurred_at)
                    elif event.type is EventType.WORKLOAD_RUNNING:
                        seen.running.setdefault(wl, event.occurred_at)
                    elif event.type in END_TYPES and wl not in seen.ended:
                        seen.ended[wl] = (event.type.value, event.occurred_at)
                        progress.set()
            except NatsTimeoutError as exc:
                print(f"  following the trail after seq {last_seq}: {exc!r}; resuming", flush=True)

    async with jetstream(settings, "ccpipe-bench-submit", Component.SUBMIT) as submit_js, \
            jetstream(settings, "ccpipe-bench-follow") as read_js:
        follower = asyncio.create_task(follow(read_js))
        publisher = EventPublisher(submit_js, signer=event_signer(settings.data_dir))
        push = resolve_push(repo, None)
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            await publisher.publish(await pipeline_submission(submit_js, settings.data_dir, push))
        while len(seen.ended) < count:
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), timeout=stall_s)
            except TimeoutError:
                if follower.done():
                    follower.result()
                raise SystemExit(f"no workload ended for {stall_s:.0f} s "
                                 f"({len(seen.ended)} of {count} ended)") from None
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    return seen


@dataclass(frozen=True)
class Figures:
    """One mode's result."""

    per_minute: float
    p50_s: float
    p95_s: float
    exited: int
    failed: int
    hop_p50_s: dict[str, float]
    """Median seconds from each stage's event to the next one's (``built→signed``...)."""


def figures(seen: Journeys) -> Figures:
    """Throughput and latency percentiles of one run."""
    latencies = sorted((seen.running[wl] - t).total_seconds() for wl, t in seen.submitted.items() if wl in seen.running)
    if not latencies:
        raise SystemExit("no workload reached workload.running")
    first = min(seen.submitted.values())
    last = max(t for _, t in seen.ended.values())
    minutes = max((last - first).total_seconds() / 60, 1e-9)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else latencies[0]
    exited = sum(1 for kind, _ in seen.ended.values() if kind == EventType.WORKLOAD_EXITED.value)
    hop_p50: dict[str, float] = {}
    for before, after in itertools.pairwise(HOPS):
        spans = [(t[after] - t[before]).total_seconds() for t in seen.hops.values() if before in t and after in t]
        if spans:
            hop_p50[f"{before.value}→{after.value}"] = statistics.median(spans)
    return Figures(len(seen.ended) / minutes, statistics.median(latencies), p95, exited, len(seen.ended) - exited,
                   hop_p50)


def run_mode(mode: str, args: argparse.Namespace) -> Figures:
    """One ``ccpipe up`` of ``mode`` in a fresh temporary directory, loaded and measured."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ccpipe-bench-{mode}-"))
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        _, work = make_demo_repository(tmp / "repo", data_dir)
        up = start_up(data_dir, MODES[mode])
        try:
            # the clients connect to the endpoints ``up`` wrote (every node of a cluster)
            seen = asyncio.run(run_load(load_settings(data_dir=data_dir), work, args.count, args.rate, args.stall_s))
        finally:
            stop_up(up)
        return figures(seen)
    finally:
        if args.keep:
            print(f"  kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


def main() -> None:
    """Run both modes and print their figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", nargs="?", type=int, default=150, help="workloads per mode (default 150)")
    parser.add_argument("--rate", type=float, default=1.5, help="submissions per second (default 1.5)")
    parser.add_argument("--order", default="embedded,cluster", help="modes to run, in order (embedded,cluster)")
    parser.add_argument("--stall-s", type=float, default=180.0, help="give up when nothing ends this long (180)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    modes = [m.strip() for m in args.order.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODES)}")
    results: dict[str, Figures] = {}
    for mode in modes:
        print(f"{mode}: {args.count} workloads at {args.rate}/s ...", flush=True)
        results[mode] = f = run_mode(mode, args)
        print(f"{mode:>9}: {f.per_minute:6.1f} workloads/min  submitted→running p50 {f.p50_s:.2f} s  "
              f"p95 {f.p95_s:.2f} s  ({f.exited} exited, {f.failed} failed)", flush=True)
        print(" " * 11 + "hop p50: " + ", ".join(f"{hop} {s:.2f} s" for hop, s in f.hop_p50_s.items()), flush=True)
    if {"embedded", "cluster"} <= results.keys():
        e, c = results["embedded"], results["cluster"]
        print(f"cluster / embedded: throughput {c.per_minute / e.per_minute:.2f}x, p50 {c.p50_s / e.p50_s:.2f}x, "
              f"p95 {c.p95_s / e.p95_s:.2f}x", flush=True)


if __name__ == "__main__":
    main()
