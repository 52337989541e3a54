"""Per-call cost of the attestation service on emulated SEV-SNP handshakes, memo off vs on.

What the KBS pays per RCAR handshake inside the attestation service: ``appraise`` (verify +
reference values + attestation policy + signed EAR) and ``evaluate_resource_policy`` (the
resource policy on the EAR claims). Every call gets evidence for a fresh report_data and fresh
runtime data, as handshakes do; the stores are file-backed (``for_data_dir``) as in the KBS.

* cold — the decision memo disabled: every call converts the input and queries rego-cpp;
* warm — the memo on: handshakes after the first reuse the decision (the claims the shipped
  policies read are the same for every handshake of a workload);
* peer, measured in the same run — the bare SNP verifier call, the floor of ``appraise``; and
  ``regopy.Input`` of the EAR claims, the conversion every evaluation that is not memoised pays.

Medians of wall time (``perf_counter``) and of CPU time of the calling thread (``thread_time``).
Run: ``.venv/bin/python bench/attest_appraisal.py [--calls N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import regopy

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.policy_memo import DECISIONS, DEFAULT_SIZE
from ccpipe.stages.attest.rvps import sample_message
from ccpipe.stages.attest.stat_cache import RACY_NS
from ccpipe.stages.attest.verifiers import Binding

INITDATA = 'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"a" = "b"\n'
RESOURCE = "ccpipe/wl/image-key"


def medians(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn(i)`` for i in 0..n-1."""
    wall, cpu = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.thread_time()
        fn(i)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def handshakes(backend: EmulatedSnpBackend, n: int) -> list[AppraisalRequest]:
    """``n`` appraisal requests as the KBS builds them, each bound to its own report_data."""
    digest = initdata_digest(INITDATA)
    out = []
    for i in range(n):
        rd = hashlib.sha384(f"nonce-{i}".encode()).digest()
        ev = backend.get_evidence(rd, host_data=digest).evidence
        out.append(AppraisalRequest(
            tee=TeeType.SNP, evidence=ev, expected_report_data=rd, expected_init_data_digest=digest,
            workload_id="wl", runtime_data={"nonce": f"n{i}", "tee-pubkey": {"kty": "EC", "x": f"{i}"}}))
    return out


def run(calls: int) -> list[tuple[str, float, float]]:
    """Measure every row; returns (name, wall ms, cpu ms)."""
    d = Path(tempfile.mkdtemp(prefix="attest-bench-"))
    backend = EmulatedSnpBackend(d, host_data=initdata_digest(INITDATA))
    svc = AttestationService.for_data_dir(d, allow_emulated=True)
    svc.reference_values.register(sample_message({
        "init_data_digest": [initdata_digest(INITDATA).hex()],
        "snp_launch_measurement": [backend.measurement.hex()],
    }), scope="wl")
    reqs = handshakes(backend, calls)
    # The stores re-read files younger than the racy window; a KBS registers values long before.
    time.sleep(RACY_NS / 1e9 + 0.1)
    first = svc.appraise(reqs[0])
    assert first.ok, first.rejection
    ears: Sequence[dict[str, Any]] = [svc.appraise(r).ear_claims for r in reqs]
    verifier = svc.verifier(TeeType.SNP)
    binding = [Binding(report_data=r.expected_report_data, init_data_digest=r.expected_init_data_digest)
               for r in reqs]

    rows = [("peer: SNP verifier.verify alone", *medians(lambda i: verifier.verify(reqs[i].evidence, binding[i]),
                                                         calls))]
    for label, size in (("cold (memo off)", 0), ("warm (memo on)", DEFAULT_SIZE)):
        DECISIONS.configure(size)
        DECISIONS.clear()
        svc.appraise(reqs[0])
        svc.evaluate_resource_policy("default", ears[0], RESOURCE)
        rows.append((f"appraise, {label}", *medians(lambda i: svc.appraise(reqs[i]), calls)))
        rows.append((f"evaluate_resource_policy, {label}",
                     *medians(lambda i: svc.evaluate_resource_policy("default", ears[i], RESOURCE), calls)))
    DECISIONS.configure(DEFAULT_SIZE)
    rows.append(("peer: regopy.Input(EAR claims)", *medians(lambda i: regopy.Input(ears[i]), calls)))
    return rows


def main() -> None:
    """Print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="handshakes per row (each with its own evidence)")
    args = ap.parse_args()
    print(f"{'per call':42s} {'wall ms':>8s} {'cpu ms':>8s}   (median of {args.calls})")
    for name, wall, cpu in run(args.calls):
        print(f"{name:42s} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
