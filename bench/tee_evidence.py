"""Evidence generations per second of each emulated backend, with the signing floor as the peer.

Each backend's ``get_evidence`` (report/quote built, signed, serialized to Trustee's evidence
JSON) runs for ``--seconds`` per run, ``--runs`` times; the median rate is printed. The peer
rows are the bare signature each backend must make (ECDSA P-384 for SEV-SNP, P-256 for TDX),
measured in the same run, so the cost of everything else is visible.

    .venv/bin/python bench/tee_evidence.py [--runs 5] [--seconds 1.0] [--data-dir DIR] [--json]

The emulated roots are generated once in a temporary directory unless ``--data-dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.enclave_runner.tee.sample import SampleBackend

REPORT_DATA = bytes(range(48))


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()  # warm up
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> int:
    """Run the benchmark and print one line per backend and peer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccpipe-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        setup = time.perf_counter()
        snp, tdx = EmulatedSnpBackend(data_dir), EmulatedTdxBackend(data_dir)
        setup_s = time.perf_counter() - setup
        p384, p256 = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
        payload = bytes(0x2A0)
        cases: dict[str, Callable[[], object]] = {
            "emulated-snp get_evidence": lambda: snp.get_evidence(REPORT_DATA),
            "peer: ECDSA P-384 sign (SNP floor)": lambda: p384.sign(payload, ec.ECDSA(hashes.SHA384())),
            "emulated-tdx get_evidence": lambda: tdx.get_evidence(REPORT_DATA),
            "peer: ECDSA P-256 sign (TDX floor)": lambda: p256.sign(payload, ec.ECDSA(hashes.SHA256())),
            "sample get_evidence": lambda: SampleBackend().get_evidence(REPORT_DATA),
        }
        runs: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, fn in cases.items():  # interleaved, so drift hits every case alike
                runs[name].append(rate(fn, args.seconds))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    if args.json:
        print(json.dumps({"setup_s": setup_s, "per_second_median": medians, "runs": runs}, indent=2))
        return 0
    print(f"emulated roots ready in {setup_s:.2f} s ({'reused' if args.data_dir else 'generated'})")
    print(f"{'case':40} {'median/s':>10} {'min/s':>10} {'max/s':>10}   ({args.runs} runs x {args.seconds:g} s)")
    for name, values in runs.items():
        print(f"{name:40} {medians[name]:10.0f} {min(values):10.0f} {max(values):10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
