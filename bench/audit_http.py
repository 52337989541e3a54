"""Audit HTTP API benchmark: request latency over a filled index, beside the same answer
computed in-process (the peer: what the API adds is HTTP, JSON and the worker-thread hop).

Builds a trail of ``--workloads`` signed synthetic journeys (10 events each) through the real
write path (Ingestor → SqliteAudit, one signed checkpoint), serves it with ``serve_reader`` on
loopback, and times sequential keep-alive requests for: a workload's journey, an event's
inclusion proof, everything that ran an image, and events by image digest. Prints p50/p99 per
operation, HTTP and in-process.

Usage: ``.venv/bin/python bench/audit_http.py [--workloads 5000] [--requests 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the journeys are a test fixture: tests/

import aiohttp

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.http.limits import ApiLimits
from ccpipe.pipeline.audit.http.params import event_filter
from ccpipe.pipeline.audit.http.reader import AuditReader
from ccpipe.pipeline.audit.http.service import serve_reader
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.schemas.config import Settings
from tests.audit_journeys import Names, Signers, signed_messages


def build(db: Path, workloads: int) -> NoteSigner:
    """Fill ``db`` with ``workloads`` signed journeys and one checkpoint; returns the log key."""
    signers, log = Signers(), NoteSigner.generate("ccpipe-audit")
    ring = db.parent / "keyring.json"
    signers.keyring.save(ring)
    store = SqliteAudit(db, synchronous="NORMAL")
    try:
        ingest = Ingestor(store, KeyringFile(ring))
        batch: list[StreamMessage] = []
        for seq, (data, sig) in enumerate(signed_messages(signers, 0, workloads), start=1):
            batch.append(StreamMessage(seq, data, sig))
            if len(batch) == 1000:
                ingest.ingest(batch)
                batch = []
        if batch:
            ingest.ingest(batch)
        publish_checkpoint(store, log)
    finally:
        store.close()
    return log


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.sqlite"
        t0 = time.perf_counter()
        log = build(db, args.workloads)
        print(f"trail: {args.workloads * 10:,} events built in {time.perf_counter() - t0:.1f} s")
        rng = random.Random(7)
        picks = [Names(rng.randrange(args.workloads)) for _ in range(args.requests)]
        direct_store = SqliteAudit(db)
        direct = AuditReader(direct_store, direct_store, log.verifier.vkey)
        release_ids = [next(e.event_id for e in direct.index.journey(n.workload_id)
                            if e.type in ("key.released", "key.denied")) for n in picks]

        def opener() -> AuditReader:
            store = SqliteAudit(db)
            return AuditReader(store, store, log.verifier.vkey)

        ops: dict[str, tuple[Callable[[int], str], Callable[[int], object]]] = {
            "journey": (lambda i: f"/api/v1/workloads/{picks[i].workload_id}/journey",
                        lambda i: direct.journey(picks[i].workload_id)),
            "proof": (lambda i: f"/api/v1/events/{release_ids[i]}/proof",
                      lambda i: direct.proof(release_ids[i])),
            "image runs": (lambda i: f"/api/v1/images/{picks[i].image}/runs",
                           lambda i: direct.image_runs(picks[i].image)),
            "events by image": (lambda i: f"/api/v1/events?image_digest={picks[i].image}",
                                lambda i: direct.events(event_filter({"image_digest": picks[i].image}))),
        }
        async with serve_reader(opener, ApiLimits.of(Settings())) as base, aiohttp.ClientSession() as session:

            async def http(path: str) -> None:
                async with session.get(base + path) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            print(f"{'operation':<16} {'HTTP p50':>9} {'HTTP p99':>9}   {'in-process p50':>14} {'p99':>7}  (ms)")
            for name, (path, call) in ops.items():

                async def run_http(i: int, p: Callable[[int], str] = path) -> None:
                    await http(p(i))

                async def run_direct(i: int, c: Callable[[int], object] = call) -> None:
                    c(i)

                await timed(20, run_http)  # warm up
                h = await timed(args.requests, run_http)
                d = await timed(args.requests, run_direct)
                print(f"{name:<16} {statistics.median(h):9.2f} {pct(h, 0.99):9.2f}   "
                      f"{statistics.median(d):14.2f} {pct(d, 0.99):7.2f}")
        direct_store.close()


if __name__ == "__main__":
    asyncio.run(main())
