"""Full RCAR handshakes per second against the HTTP KBS, next to the cost of the crypto alone.

Setup: a real nats-server (events stored and signed, resources in the NATS KV bucket), the
KBS in its own process (one event loop, as deployed), and N concurrent clients in this process
doing the whole exchange with :func:`stages.attest.kbs.client.fetch_resource`: POST /auth →
emulated SEV-SNP evidence binding nonce + fresh EC key → POST /attest → GET resource (JWE) →
decrypt. Prints handshakes/s and p50/p99 latency per concurrency level.

Appraisers compared in the same run (``--appraiser``):
* ``service`` — the attestation service as deployed (verifier + Rego policy + EAR token, Rego
  resource policy);
* ``verifier`` — the SNP verifier alone and the built-in resource rule, i.e. the KBS's own
  cost (protocol, sessions, token, JWE, two signed events) plus signature/chain checks.

The floor, measured here on one core: the cryptographic checks one handshake needs, no I/O —
server: SNP report signature + chain verification (the verifier), ES256 token sign + verify,
JWE encryption (ECDH + AES-KW + GCM), two Ed25519 event signatures; client: EC key generation,
ECDSA P-384 evidence signature (emulated backend), JWE decryption.

Run: ``.venv/bin/python bench/kbs_handshake.py [--handshakes 400] [--clients 1,8,32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from enclave_runner.tee.initdata import initdata_digest
from pipeline.audit.event_signing import signature_header
from pipeline.bus import connect, provision_stream
from pipeline.servers import EmbeddedNats
from pipeline.signing import component_key
from schemas.envelope import Event, Source
from schemas.errors import FailureReason
from schemas.events import EventType, KeyDenied
from stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from stages.attest.kbs.admin_client import KbsAdminClient
from stages.attest.kbs.appraiser import AppraisalInput, AppraisalOutcome, evidence_digest
from stages.attest.kbs.attestation import ServicePolicies
from stages.attest.kbs.binding import runtime_data_digest
from stages.attest.kbs.client import KbsSession, fetch_resource
from stages.attest.kbs.jwe import encrypt_resource, import_tee_pubkey
from stages.attest.kbs.release import ResourceDecision, workload_decision
from stages.attest.kbs.service import build_kbs, publisher_for, serve_http
from stages.attest.kbs.store_nats import NatsKvBackend
from stages.attest.kbs.tokens import TokenBroker
from stages.attest.rvps import sample_message
from stages.attest.verifiers import Binding, VerifierConfig, verifier_for
from stages.attest.verifiers.emulated import emulated_roots_in

WORKLOAD = "bench"
INITDATA = b'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"ccpipe.toml" = "workload = \\"bench\\""\n'


def verifier_config(data_dir: Path) -> VerifierConfig:
    """Emulated roots accepted (the bench's evidence is emulated SEV-SNP)."""
    roots = emulated_roots_in(data_dir)
    return VerifierConfig(allow_emulated=True, emulated_snp_roots_pem=roots.snp_roots_pem,
                          emulated_tdx_root_pem=roots.tdx_root_pem)


class VerifierOnly:
    """Appraiser: the verifier alone, affirming whatever verifies (the KBS's own cost)."""

    def __init__(self, data_dir: Path) -> None:
        self.verifier = verifier_for("snp", verifier_config(data_dir))

    def appraise(self, req: AppraisalInput) -> AppraisalOutcome:
        claims = self.verifier.verify(req.evidence, Binding(report_data=req.expected_report_data,
                                                            init_data_digest=req.expected_init_data_digest))
        return AppraisalOutcome(ok=True, tee="snp", backend="emulated", emulated=True, claims={},
                                ear_status="affirming", trust_vector={"executables": 2}, policy_id="bench",
                                policy_digest="sha256:" + "0" * 64, evidence_digest=evidence_digest(req.evidence),
                                measurement=claims.measurement)


class BuiltinOnly(ServicePolicies):
    """Resource decisions by the built-in workload rule alone (no Rego)."""

    def decide(self, claims: dict[str, Any], path: str) -> ResourceDecision:
        return workload_decision(claims, path) or ResourceDecision(True, "bench", "bench")


async def serve(data_dir: Path, nats_url: str, url_file: Path, appraiser: str) -> None:
    """The KBS process: serve until killed; write the URL to ``url_file`` when ready."""
    nc = await connect(nats_url, name="bench-kbs")
    js = nc.jetstream()
    kbs = build_kbs(data_dir, publisher_for(js, data_dir), await NatsKvBackend.open(js), allow_emulated=True,
                    appraiser=VerifierOnly(data_dir) if appraiser == "verifier" else None)
    if appraiser == "verifier":
        kbs.releaser.policies = BuiltinOnly(kbs.releaser.policies.service)  # type: ignore[attr-defined]
    async with serve_http(kbs) as url:
        url_file.write_text(url)
        await asyncio.Event().wait()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_clients(
    url: str, backend: EmulatedSnpBackend, handshakes: int, clients: int
) -> tuple[float, list[float]]:
    """``handshakes`` full exchanges by ``clients`` concurrent clients; returns (seconds, latencies)."""
    latencies: list[float] = []
    queue = iter(range(handshakes))
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                key = await fetch_resource(url, backend, f"ccpipe/{WORKLOAD}/image-key", workload_id=WORKLOAD,
                                           tee="snp", init_data=INITDATA, http=http)
                latencies.append(time.perf_counter() - t0)
                assert key == b"K" * 32

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - start, latencies


def floor_ms(data_dir: Path, backend: EmulatedSnpBackend, rounds: int = 200) -> dict[str, float]:
    """Median milliseconds per handshake of the cryptographic checks alone (server and client)."""
    verifier = verifier_for("snp", verifier_config(data_dir))
    tokens = TokenBroker.for_data_dir(data_dir)
    key = component_key(data_dir, "kbs")
    event = Event(type=EventType.KEY_DENIED, workload_id=WORKLOAD, source=Source(component="kbs"),
                  payload=KeyDenied(resource="a/b/c", reason=FailureReason(stage="kbs", code="x", message="y")))
    init = initdata_digest(INITDATA.decode())
    server, client = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        session = KbsSession("http://unused", backend, workload_id=WORKLOAD, tee="snp")  # EC key generation
        rd = runtime_data_digest("n" * 44, session.tee_pubkey)
        ev = backend.get_evidence(rd, host_data=init)
        t1 = time.perf_counter()
        verifier.verify(ev.evidence, Binding(report_data=rd, init_data_digest=init))
        token, _ = tokens.issue({"ear.status": "affirming"}, {"workload_id": WORKLOAD})
        tokens.verify(token)
        jwe = encrypt_resource(b"K" * 32, import_tee_pubkey(session.tee_pubkey))
        for _ in range(2):
            signature_header(key, event.canonical_bytes())
        t2 = time.perf_counter()
        session.decrypt(jwe.model_dump_json().encode())
        t3 = time.perf_counter()
        server.append((t2 - t1) * 1e3)
        client.append((t1 - t0 + t3 - t2) * 1e3)
    return {"server": statistics.median(server), "client": statistics.median(client)}


async def bench(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="kbs-bench-"))
    data_dir = root / "data"
    data_dir.mkdir()
    nats = EmbeddedNats(root / "nats").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nc = await connect(nats.url, name="bench")
        await provision_stream(nc.jetstream())
        backend = EmulatedSnpBackend(data_dir, host_data=initdata_digest(INITDATA.decode()))
        floor = floor_ms(data_dir, backend)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"cores available: {os.cpu_count()}; load average before the run: {load}; "
              f"handshakes per run: {args.handshakes}")
        print(f"floor (crypto only, one core): server {floor['server']:.2f} ms/handshake "
              f"(= {1000 / floor['server']:.0f}/s), client {floor['client']:.2f} ms")
        for appraiser in args.appraiser.split(","):
            url_file = root / f"url-{appraiser}"
            proc = subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir), nats.url, str(url_file),
                                     appraiser])
            procs.append(proc)
            while not url_file.exists():
                await asyncio.sleep(0.05)
            url = url_file.read_text()
            admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
            await admin.set_reference_values(sample_message({
                f"scope/{WORKLOAD}/init_data_digest": [initdata_digest(INITDATA.decode()).hex()],
                f"scope/{WORKLOAD}/snp_launch_measurement": [backend.measurement.hex()],
            }))
            await admin.set_resource(f"ccpipe/{WORKLOAD}/image-key", b"K" * 32)
            await run_clients(url, backend, 20, 4)  # warm up
            for clients in (int(c) for c in args.clients.split(",")):
                seconds, lat = await run_clients(url, backend, args.handshakes, clients)
                print(f"appraiser={appraiser:8s} clients={clients:3d}: {args.handshakes / seconds:7.1f} handshakes/s, "
                      f"p50 {statistics.median(lat) * 1e3:6.1f} ms, p99 {percentile(lat, 0.99) * 1e3:6.1f} ms")
            proc.terminate()
            proc.wait()
        await nc.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=400)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--appraiser", default="verifier,service")
    parser.add_argument("--serve", nargs=4, metavar=("DATA_DIR", "NATS_URL", "URL_FILE", "APPRAISER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        data_dir, nats_url, url_file, appraiser = args.serve
        asyncio.run(serve(Path(data_dir), nats_url, Path(url_file), appraiser))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
