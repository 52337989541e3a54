"""Benchmark of the audit log's pure Merkle core, with its floor measured in the same run.

    .venv/bin/python bench/audit_merkle.py [--leaves 1000000] [--runs 3] [--store-leaves 100000]

Prints medians over ``--runs``:

* floor: a plain ``hashlib.sha256(leaf).digest()`` loop over the same leaves — what merely
  reading and hashing every leaf once costs;
* append: :class:`CompactRange.extend` of RFC 6962 leaf hashes (leaf hash + frontier merges);
* integrate: :func:`integrate` in batches of 1,000 keeping every new node in a dict, i.e. the
  store's work minus the SQL;
* proofs: inclusion and consistency proofs built from the stored nodes (O(log n) fetches),
  and verification;
* store: :class:`SqliteLogStore.append` in batches of 1,000 (WAL, synchronous=FULL), on a
  smaller log by default because it writes to disk.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.integrate import integrate
from ccpipe.pipeline.audit.merkle import CompactRange, NodeID, leaf_hash, verify_consistency, verify_inclusion
from ccpipe.pipeline.audit.proofs import consistency_proof, inclusion_proof, subtree_hash
from ccpipe.pipeline.audit.store.sqlite import SqliteLogStore


def make_leaves(n: int) -> list[bytes]:
    # ~200-byte canonical-JSON-like events, each distinct.
    pad = "x" * 120
    return [
        b'{"id":"%032x","source":{"component":"build"},"type":"build.built","payload":"%s"}' % (i, pad.encode())
        for i in range(n)
    ]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_rate(n: int, runs: int, fn: Callable[[], object]) -> tuple[float, float]:
    times = [timed(fn) for _ in range(runs)]
    med = statistics.median(times)
    return n / med, med


def floor(leaves: Sequence[bytes]) -> None:
    sha = hashlib.sha256
    for d in leaves:
        sha(d).digest()


def append_all(leaves: Sequence[bytes]) -> bytes:
    cr = CompactRange()
    cr.extend(leaf_hash(d) for d in leaves)
    return cr.root()


def integrate_all(leaves: Sequence[bytes], batch: int = 1000) -> tuple[dict[NodeID, bytes], bytes]:
    nodes: dict[NodeID, bytes] = {}

    def fetch(ids: Sequence[NodeID]) -> list[bytes]:
        return [nodes[i] for i in ids]

    size, root = 0, b""
    for a in range(0, len(leaves), batch):
        done = integrate(fetch, size, [leaf_hash(d) for d in leaves[a : a + batch]])
        nodes.update(done.nodes)
        size, root = done.size, done.root
    return nodes, root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--store-leaves", type=int, default=100_000, help="0 skips the SQLite store")
    args = ap.parse_args()
    n, runs = args.leaves, args.runs
    leaves = make_leaves(n)
    print(f"{n:,} leaves of {len(leaves[0])} bytes, median of {runs} runs")

    f_rate, f_t = median_rate(n, runs, lambda: floor(leaves))
    print(f"  floor   plain sha256 loop        {f_rate:>12,.0f} hashes/s   ({f_t:.3f} s)")
    a_rate, a_t = median_rate(n, runs, lambda: append_all(leaves))
    print(f"  append  CompactRange.extend      {a_rate:>12,.0f} appends/s  ({a_t:.3f} s, {a_t / f_t:.2f}x floor)")
    i_rate, i_t = median_rate(n, runs, lambda: integrate_all(leaves))
    print(f"  integrate batches of 1000 +nodes {i_rate:>12,.0f} appends/s  ({i_t:.3f} s, {i_t / f_t:.2f}x floor)")

    nodes, root = integrate_all(leaves)
    assert root == append_all(leaves)
    hashes_by_index = {idx: h for (lvl, idx), h in nodes.items() if lvl == 0}

    def fetch(ids: Sequence[NodeID]) -> list[bytes]:
        return [nodes[i] for i in ids]

    rng = random.Random(7)
    picks = [(rng.randrange(n), rng.randrange(1, n)) for _ in range(args.proofs)]
    gen_incl, gen_cons, ver_incl = [], [], []
    for i, m in picks:
        t0 = time.perf_counter()
        p = inclusion_proof(fetch, i, n)
        t1 = time.perf_counter()
        verify_inclusion(hashes_by_index[i], i, n, p, root)
        t2 = time.perf_counter()
        c = consistency_proof(fetch, m, n)
        t3 = time.perf_counter()
        gen_incl.append(t1 - t0)
        ver_incl.append(t2 - t1)
        gen_cons.append(t3 - t2)
    verify_consistency(m, n, c, subtree_hash(fetch, 0, m), root)
    us = 1e6
    print(
        f"  proofs  inclusion  generate {statistics.median(gen_incl) * us:7.1f} µs  "
        f"verify {statistics.median(ver_incl) * us:6.1f} µs  (median of {args.proofs}, {len(p)} hashes)"
    )
    print(f"          consistency generate {statistics.median(gen_cons) * us:6.1f} µs")

    if args.store_leaves:
        sn = min(args.store_leaves, n)
        entries = [Entry(d, stream_seq=k + 1) for k, d in enumerate(leaves[:sn])]
        times = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp, SqliteLogStore(Path(tmp) / "log.db") as store:
                t0 = time.perf_counter()
                for a in range(0, sn, 1000):
                    store.append(entries[a : a + 1000])
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for i, _m in picks[:200]:
                    inclusion_proof(store.fetch_nodes, i % sn, sn)
                proof_t = (time.perf_counter() - t0) / 200
        med = statistics.median(times)
        print(
            f"  store   SQLite append, 1000/batch {sn / med:>11,.0f} appends/s  ({sn:,} leaves, {med:.2f} s); "
            f"inclusion proof from SQLite {proof_t * us:.0f} µs"
        )


if __name__ == "__main__":
    main()
