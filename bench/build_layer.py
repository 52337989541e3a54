"""Benchmark: one layer from a real directory tree, ccpipe against `umoci insert`, same run.

    .venv/bin/python bench/build_layer.py [--tree DIR] [--runs 3] [--min-mb 200] [--json]

The tree defaults to this Python's standard library (without site-packages), copied as many
times as needed to reach ``--min-mb``. Each round times, in turn:

* ``ccpipe zlib-ng``: ``plan_copies`` + ``write_layer`` with the default compression (the
  build stage's real path: walk, sort, tar, parallel gzip, both digests, blob on disk);
* ``ccpipe zlib``: the same with CPython's zlib, to show what the compressor choice is worth;
* ``umoci insert``: ``umoci insert --rootless`` of the same tree into a fresh image;
* ``gzip zlib-ng`` / ``gzip zlib``: one-thread deflate of the layer's tar bytes in memory,
  level 1 and 6, the raw compressor speed without any I/O.

MB/s = MiB of file content in the tree per second (the same numerator for every tool). The
median of ``--runs`` rounds is printed; rounds interleave the tools so that a busy machine
slows all of them alike.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zlib_ng import zlib_ng

from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.workload import CopySpec
from ccpipe.stages.build.base.fs_index import BaseFilesystem
from ccpipe.stages.build.image import plan_copies
from ccpipe.stages.build.layer import DEFAULT_COMPRESSION, Compression, write_layer

MiB = 1 << 20


def tree_stats(root: Path) -> tuple[int, int]:
    """(bytes of regular files, number of entries)."""
    total = count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        count += len(dirnames) + len(filenames)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total, count


def make_tree(work: Path, source: Path | None, min_mb: int) -> Path:
    """A private copy of ``source`` (or the stdlib), repeated until it holds ``min_mb`` MiB."""
    src = source or Path(sysconfig.get_paths()["stdlib"])
    tree = work / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("site-packages", "dist-packages")
    i = 0
    while tree_stats(tree)[0] < min_mb * MiB:
        shutil.copytree(src, tree / f"copy{i}", symlinks=True, ignore=ignore)
        i += 1
        if i > 64:
            raise SystemExit(f"{src} is too small to reach {min_mb} MiB")
    return tree


def time_ccpipe(tree: Path, work: Path, compression: Compression) -> tuple[float, int, int]:
    layout = OciLayout.create(work / "ccpipe-out")
    t = time.perf_counter()
    entries = plan_copies(tree.parent, [CopySpec(src=f"{tree.name}/", dst="/data/")], BaseFilesystem(), 1_700_000_000)
    result = write_layer(layout, entries, source_date_epoch=1_700_000_000, compression=compression)
    elapsed = time.perf_counter() - t
    shutil.rmtree(layout.root)
    return elapsed, result.descriptor.size, result.uncompressed_size


def time_umoci(tree: Path, work: Path) -> tuple[float, int]:
    layout = work / "umoci-out"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:t"], check=True)
    before = {p.name for p in (layout / "blobs/sha256").iterdir()}
    t = time.perf_counter()
    subprocess.run(["umoci", "insert", "--rootless", "--image", f"{layout}:t", str(tree), "/data"], check=True)
    elapsed = time.perf_counter() - t
    new = [p for p in (layout / "blobs/sha256").iterdir() if p.name not in before]
    size = max(p.stat().st_size for p in new)
    shutil.rmtree(layout)
    return elapsed, size


def time_deflate(module: object, level: int, data: bytes) -> float:
    c = module.compressobj(level, module.DEFLATED, -15)  # type: ignore[attr-defined]
    t = time.perf_counter()
    for i in range(0, len(data), MiB):
        c.compress(data[i : i + MiB])
    c.flush()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, help="directory to copy as the layer's content (default: the stdlib)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--min-mb", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("umoci") is None:
        raise SystemExit("umoci is not installed (scripts/install-system-deps.sh installs it)")

    with tempfile.TemporaryDirectory(prefix="ccpipe-bench-") as tmp:
        work = Path(tmp)
        tree = make_tree(work, args.tree, args.min_mb)
        size, entries = tree_stats(tree)
        mb = size / MiB
        # Warm the page cache so that no tool pays for the first read.
        subprocess.run(["tar", "-cf", "/dev/null", "-C", str(tree), "."], check=True)

        times: dict[str, list[float]] = {"ccpipe zlib-ng": [], "ccpipe zlib": [], "umoci insert": []}
        sizes: dict[str, int] = {}
        tar_size = 0
        for _ in range(args.runs):
            t, sizes["ccpipe zlib-ng"], tar_size = time_ccpipe(tree, work, DEFAULT_COMPRESSION)
            times["ccpipe zlib-ng"].append(t)
            zlib_c = Compression(level=DEFAULT_COMPRESSION.level, library="zlib")
            t, sizes["ccpipe zlib"], _ = time_ccpipe(tree, work, zlib_c)
            times["ccpipe zlib"].append(t)
            t, sizes["umoci insert"] = time_umoci(tree, work)
            times["umoci insert"].append(t)

        # Raw compressor speed on the layer's own bytes (kept in memory; at most 256 MiB).
        out = OciLayout.create(work / "raw")
        plan = plan_copies(tree.parent, [CopySpec(src="tree/", dst="/data/")], BaseFilesystem(), 0)
        blob = write_layer(out, plan, source_date_epoch=0).descriptor
        data = gzip.decompress(out.blob_path(blob.digest).read_bytes())[: 256 * MiB]
        raw: dict[str, list[float]] = {}
        for _ in range(args.runs):
            for name, mod in (("zlib-ng", zlib_ng), ("zlib", zlib)):
                for level in (1, 6):
                    raw.setdefault(f"gzip {name} level {level} (1 thread)", []).append(time_deflate(mod, level, data))
        raw_mb = len(data) / MiB

    rows: list[dict[str, Any]] = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"tool": name, "median_s": round(med, 3), "mb_per_s": round(mb / med, 1),
                     "runs_s": [round(x, 3) for x in ts], "layer_bytes": sizes[name]})  # fmt: skip
    for name, ts in raw.items():
        med = statistics.median(ts)
        rows.append({"tool": name, "median_s": round(med, 3), "mb_per_s": round(raw_mb / med, 1),
                     "runs_s": [round(x, 3) for x in ts], "layer_bytes": None})  # fmt: skip
    report = {
        "tree_mib": round(mb, 1), "entries": entries, "tar_mib": round(tar_size / MiB, 1), "runs": args.runs,
        "cpus": os.cpu_count(), "compression": DEFAULT_COMPRESSION.describe(), "results": rows,
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"tree: {mb:.0f} MiB of files, {entries} entries (tar {tar_size / MiB:.0f} MiB); "
          f"{os.cpu_count()} CPUs; median of {args.runs}; default {DEFAULT_COMPRESSION.describe()}")  # fmt: skip
    for r in rows:
        ratio = f"  layer {r['layer_bytes'] / MiB:6.1f} MiB" if r["layer_bytes"] else ""
        print(f"  {r['tool']:34s} {r['mb_per_s']:7.1f} MB/s  ({r['median_s']:.2f} s){ratio}")
    ccpipe, umoci = (statistics.median(times[k]) for k in ("ccpipe zlib-ng", "umoci insert"))
    print(f"ccpipe is {umoci / ccpipe:.1f}x umoci insert")


if __name__ == "__main__":
    main()
