"""Audit log benchmark: append + index 1,000,000 signed events, then queries, proofs and the
publish → signed-checkpoint latency through a real nats-server.

Prints, for the goals of issue #9 (≥ 10,000 events/s on 2 cores, checkpoint inclusion p99 < 2 s,
queries p99 < 20 ms), the measured figures beside their peers measured in the same run:

* sustained append+index events/s: the full ingest (Ed25519 check, field extraction, leaf
  + Merkle nodes + index rows + stream position in one transaction per batch of the service's
  ``BATCH``, a signed checkpoint every 0.5 s), next to the same leaves inserted bare (no Merkle tree, no
  index, no signature check) and to bare Ed25519 verification;
* query latency p50/p99 by image and by key on the full index;
* proof generation (``audit prove`` document) p50/p99;
* publish → inclusion in a signed checkpoint p50/p99, through NATS and the live service,
  for a smaller sample published at a steady rate.

Events are realistic: the synthetic journeys of :mod:`tests.audit_journeys`, varied per
workload, canonical RFC 8785 bytes, each signed by its component. To generate a million
quickly, 1,000 journeys are built with the schema models and the rest are derived from them by
replacing every workload-specific value (ids, digests, keys, nodes) and signing again.

Usage: ``.venv/bin/python bench/audit_index.py [--events 1000000] [--backend sqlite|postgresql]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uuid6
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.prove import prove_event
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.service import BATCH
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from tests.audit_journeys import COMPONENTS, Names, journey

TEMPLATES = 1000
_worker: dict[str, Any] = {}


def _values(n: int) -> list[tuple[bytes, bytes]]:
    w = Names(n)
    return [(w.workload_id.encode(), b""), (w.commit.encode(), b""), (w.plain_image.encode(), b""),
            (w.image.encode(), b""), (hashlib.sha256(f"sig/{n}".encode()).hexdigest().encode(), b""),
            (hashlib.sha256(f"evidence/{n}".encode()).hexdigest().encode(), b""),
            (hashlib.sha256(f"eph/{n}".encode()).hexdigest().encode(), b""),
            (hashlib.sha256(f"out/{n}".encode()).hexdigest().encode(), b"")]


def _init(seeds: dict[str, bytes]) -> None:
    _worker["keys"] = {c: ComponentKey(c, Ed25519PrivateKey.from_private_bytes(s)) for c, s in seeds.items()}
    _worker["templates"] = [[(e.canonical_bytes(), e.source.component, e.id) for e in journey(m, denied=m % 10 == 9)]
                            for m in range(TEMPLATES)]


def _generate(span: tuple[int, int]) -> list[tuple[bytes, str]]:
    keys, templates = _worker["keys"], _worker["templates"]
    out = []
    for n in range(*span):
        m = n % TEMPLATES
        old, new = _values(m), _values(n)
        ids: dict[str, str] = {}
        for data, component, eid in templates[m]:
            if n != m:
                for (a, _), (b, _) in zip(old, new, strict=True):
                    data = data.replace(a, b)
                ids[eid] = ids.get(eid) or str(uuid6.uuid7())
                data = data.replace(eid.encode(), ids[eid].encode())
                for ref, fresh in ids.items():  # the attestation id a key release refers to
                    data = data.replace(ref.encode(), fresh.encode())
            out.append((data, signature_header(keys[component], data)))
    return out


def generate(events: int, seeds: dict[str, bytes]) -> list[tuple[bytes, str]]:
    """About ``events`` signed canonical events (whole journeys)."""
    workloads = max(1, events // 10)
    spans = [(a, min(a + 5000, workloads)) for a in range(0, workloads, 5000)]
    with multiprocessing.get_context("fork").Pool(2, _init, (seeds,)) as pool:
        chunks = pool.map(_generate, spans)
    return [m for c in chunks for m in c][:events]


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def open_store(backend: str, root: Path) -> Any:
    """An empty store of ``backend`` (and the throwaway PostgreSQL server, if any)."""
    if backend == "postgresql":
        from ccpipe.pipeline.audit.store.postgres import PostgresAudit
        from tests.integration.pipeline.audit.audit_pg import ThrowawayPostgres

        server = ThrowawayPostgres().start()
        return PostgresAudit(server.new_database()), server
    from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit

    return SqliteAudit(root / "index.sqlite"), None


def bench_append(msgs: list[tuple[bytes, str]], keyring_file: Path, backend: str, root: Path,
                 batch: int, workers: int) -> tuple[Any, Any, float, NoteSigner]:
    """Ingest like the live log does: batch N+1 prepared by the worker processes while batch N
    is written, a signed checkpoint every 0.5 s."""
    store, server = open_store(backend, root)
    ing = Ingestor(store, KeyringFile(keyring_file), workers=workers)
    ing.submit([StreamMessage(1, msgs[0][0], msgs[0][1])] * 2 * max(1, workers)).result()  # start the workers
    signer = NoteSigner.generate("bench-log")
    batches = [[StreamMessage(i + j + 1, d, s) for j, (d, s) in enumerate(msgs[i:i + batch])]
               for i in range(0, len(msgs), batch)]
    t0 = last_cp = time.perf_counter()
    ahead = ing.submit(batches[0])
    for k, current in enumerate(batches):
        rows = ahead.result()
        if k + 1 < len(batches):
            ahead = ing.submit(batches[k + 1])
        ing.append(current, rows)
        i = k * batch
        now = time.perf_counter()
        if now - last_cp >= 0.5:
            publish_checkpoint(store, signer)
            last_cp = now
        if (i // batch) % 100 == 0 and i:
            print(f"  … {i:,} events, {i / (now - t0):,.0f}/s", flush=True)
    publish_checkpoint(store, signer)
    rate = len(msgs) / (time.perf_counter() - t0)
    ing.close()
    return store, server, rate, signer


def bare_insert_rate(msgs: list[tuple[bytes, str]], root: Path, batch: int) -> float:
    """Peer: the same bytes inserted as bare rows (no tree, no index, no check), same durability."""
    db = sqlite3.connect(root / "bare.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE leaves (idx INTEGER PRIMARY KEY, data BLOB, signature TEXT)")
    n = min(len(msgs), 200_000)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        db.execute("BEGIN")
        rows = [(i + j, d, s) for j, (d, s) in enumerate(msgs[i:i + batch])]
        db.executemany("INSERT INTO leaves VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    db.close()
    return n / (time.perf_counter() - t0)


def verify_only_rate(msgs: list[tuple[bytes, str]], keyring: Keyring) -> float:
    """Peer: signature checks alone, in this process."""
    from ccpipe.pipeline.event_trust import check_event_signature

    sample = msgs[:20_000]
    t0 = time.perf_counter()
    for d, s in sample:
        check_event_signature(keyring, d, s)
    return len(sample) / (time.perf_counter() - t0)


def timed(fn: Any, args: list[Any]) -> list[float]:
    """Milliseconds of each call ``fn(a)``."""
    out = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def checkpoint_latency(sample: list[tuple[bytes, str]], root: Path, keyring: Keyring, rate: float) -> list[float]:
    """Seconds from each publish to the arrival of the first signed checkpoint covering it."""
    from ccpipe.pipeline.audit.service import CHECKPOINT_SUBJECT, running_audit_log
    from ccpipe.pipeline.bus import EVENTS_STREAM, connect, provision_stream
    from ccpipe.pipeline.servers import EmbeddedNats
    from ccpipe.pipeline.settings import load_settings
    from ccpipe.pipeline.signing import keyring_path

    nats = EmbeddedNats(root / "nats").start()
    try:
        settings = load_settings(data_dir=root / "nats-data", nats_url=nats.url)
        keyring.save(keyring_path(settings.data_dir))
        nc = await connect(nats.url, name="bench")
        js = nc.jetstream()
        await provision_stream(js)
        arrivals: list[tuple[float, int]] = []

        async def on_cp(msg: Any) -> None:
            arrivals.append((time.perf_counter(), int(msg.data.split(b"\n")[1])))

        await nc.subscribe(CHECKPOINT_SUBJECT, cb=on_cp)
        sent: list[tuple[float, int]] = []
        async with running_audit_log(settings, nats.url) as svc:
            t0 = time.perf_counter()
            for i, (d, s) in enumerate(sample):
                # steady rate: wait for this message's slot
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = time.perf_counter()
                ack = await js.publish(f"ccpipe.evt.bench.{i}", d, stream=EVENTS_STREAM,
                                       headers={"Ccpipe-Signature": s})
                sent.append((t, ack.seq))
            await svc.wait_logged(sent[-1][1], timeout=120)
            await asyncio.sleep(0.3)
        await nc.close()
    finally:
        nats.stop()
    out = []
    for t, seq in sent:
        covered = next((a for a, size in arrivals if size >= seq and a >= t), None)
        out.append(float("inf") if covered is None else covered - t)
    return out


def main() -> None:
    """Run every measurement and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=BATCH, help="events per transaction (the service's)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--nats-sample", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2, help="processes checking signatures (as the service)")
    ap.add_argument("--only-nats", action="store_true", help="measure only publish → checkpoint latency")
    ap.add_argument("--nats-rate", type=float, default=2000.0, help="events/s published in the NATS sample")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ccpipe-bench-audit-"))
    seeds = {c: Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
             for c in COMPONENTS}
    keyring = Keyring()
    for c, s in seeds.items():
        keyring.add(c, ComponentKey(c, Ed25519PrivateKey.from_private_bytes(s)).public_key)
    keyring.save(root / "keyring.json")
    print(f"generating {args.events:,} signed events …", flush=True)
    t = time.perf_counter()
    msgs = generate(args.events, seeds)
    print(f"  {len(msgs):,} events ({statistics.mean(len(d) for d, _ in msgs[:10000]):.0f} bytes avg) "
          f"in {time.perf_counter() - t:.0f} s")
    print(f"cpus available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}")

    if args.only_nats:
        nats_part(msgs, args, root, keyring)
        return
    verify_rate = verify_only_rate(msgs, keyring)
    bare = bare_insert_rate(msgs, root, args.batch)
    print(f"\nappend+index ({args.backend}, batches of {args.batch}, {args.workers} worker processes) …",
          flush=True)
    store, server, rate, log_key = bench_append(msgs, root / "keyring.json", args.backend, root, args.batch,
                                                args.workers)
    print(f"sustained append+index:      {rate:10,.0f} events/s   (goal >= 10,000)")
    print(f"  peer: bare leaf INSERT      {bare:10,.0f} events/s   (no tree, no index, no signature check)")
    print(f"  peer: Ed25519 check only    {verify_rate:10,.0f} events/s   (check_event_signature, 1 core)")

    workloads = len(msgs) // 10
    rnd = random.Random(7)
    picks = [rnd.randrange(workloads) for _ in range(1000)]
    by_image = timed(lambda n: store.query(EventFilter(image_digest=Names(n).image)), picks)
    runs = timed(lambda n: store.runs_of_image(Names(n).image), picks)
    by_key = timed(lambda n: store.key_recipients(Names(n).key), picks)
    by_key_f = timed(lambda n: store.query(EventFilter(key_resource=Names(n).key)), picks)
    for name, v in (("query by image", by_image), ("runs_of_image", runs), ("key_recipients", by_key),
                    ("query by key", by_key_f)):
        print(f"{name + ' p50/p99:':<28} {pct(v, 50):7.2f} / {pct(v, 99):7.2f} ms   (goal p99 < 20 ms)")
    keyring.add_log_key(log_key.verifier)
    ids = [store.journey(Names(n).workload_id)[0].event_id for n in picks[:300]]
    proofs = timed(lambda eid: prove_event(store, keyring, eid), ids)
    print(f"{'proof generation p50/p99:':<28} {pct(proofs, 50):7.2f} / {pct(proofs, 99):7.2f} ms   "
          f"(tree of {store.size():,} leaves)")
    store.close()
    if server is not None:
        server.stop()

    nats_part(msgs, args, root, keyring)


def nats_part(msgs: list[tuple[bytes, str]], args: argparse.Namespace, root: Path, keyring: Keyring) -> None:
    """Publish → signed checkpoint latency through a real nats-server and the live service."""
    sample = msgs[: args.nats_sample]
    if not sample:
        shutil.rmtree(root, ignore_errors=True)
        return
    print(f"\npublish → signed checkpoint through NATS ({len(sample):,} events at {args.nats_rate:,.0f}/s) …",
          flush=True)
    lat = asyncio.run(checkpoint_latency(sample, root, keyring, args.nats_rate))
    print(f"checkpoint inclusion p50/p99: {pct(lat, 50) * 1000:7.0f} / {pct(lat, 99) * 1000:7.0f} ms   "
          "(goal p99 < 2000 ms)")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) on "
          f"{len(os.sched_getaffinity(0))} cpus")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
