"""Full RCAR handshakes per second against the HTTP KBS, next to the cost of the crypto alone.

Setup: a real nats-server (three signed events stored per handshake; resources and spent nonces
in NATS KV), the KBS as ``ccpipe kbs serve --workers W`` runs it (W processes on one port, the
session sealed in the cookie so requests may hop between them), and N concurrent clients in
this process doing the whole exchange with :func:`ccpipe.stages.attest.kbs.client.fetch_resource`:
POST /auth → emulated SEV-SNP evidence binding nonce + fresh EC key → POST /attest → GET
resource (JWE) → decrypt. Everything shares the machine's cores: the clients' and nats-server's
CPU is printed beside the KBS's. Prints handshakes/s and p50/p99 latency (medians of
``--repeat`` runs) per worker count and concurrency level.

The clients' HTTP (``--client-http``): ``raw`` (default) is a minimal HTTP/1.1 client on asyncio
streams sharing keep-alive connections (:class:`RawHttp`, the load generator's own transport — like
wrk or h2load beside a server, it keeps the generator's share of the shared cores small; the KBS
sees what it sees behind an ingress proxy that keeps upstream connections open);
``raw-per-guest`` opens a new connection for every handshake (guests talking to the KBS
directly, with no proxy in between); ``aiohttp`` is the product
client's own pooled HTTP session. Either way every RCAR step, the evidence, the key binding and
the JWE decryption are :class:`~ccpipe.stages.attest.kbs.client.KbsSession`'s.

Appraisers compared in the same run (``--appraiser``):
* ``service`` — the attestation service as deployed (verifier + Rego policy + EAR token, Rego
  resource policy);
* ``verifier`` — the SNP verifier alone and the built-in resource rule, i.e. the KBS's own
  cost (protocol, sessions, token, JWE, two signed events) plus signature/chain checks.

The floor, measured here on one core: the cryptographic checks one handshake needs, no I/O —
server: SNP report signature + chain verification (the verifier), ES256 token sign + verify,
JWE encryption (ECDH + AES-KW + GCM), two Ed25519 event signatures; client: EC key generation,
ECDSA P-384 evidence signature (emulated backend), JWE decryption.

Run: ``.venv/bin/python bench/kbs_handshake.py [--workers 1,2] [--clients 1,8,16] [--appraiser service]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# rego-cpp before aiohttp, as the KBS's own processes load it (ccpipe.stages.attest.rego_first); the
# spawned workers re-import this file first
import regopy  # noqa: F401

# isort: split
import aiohttp
import orjson
import uvloop

from ccpipe.crypto import jose
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.pipeline.bus import connect, provision_stream
from ccpipe.pipeline.event_signature import signature_header
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.signing import component_key
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, KeyDenied
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.appraiser import AppraisalInput, AppraisalOutcome, evidence_digest
from ccpipe.stages.attest.kbs.attestation import ServicePolicies
from ccpipe.stages.attest.kbs.binding import import_tee_pubkey, runtime_data_digest
from ccpipe.stages.attest.kbs.client import COOKIE, KbsSession, fetch_resource
from ccpipe.stages.attest.kbs.release import ResourceDecision, workload_decision
from ccpipe.stages.attest.kbs.requirements import requirements_path
from ccpipe.stages.attest.kbs.service import open_kbs, serve_http
from ccpipe.stages.attest.kbs.tokens import TokenBroker
from ccpipe.stages.attest.kbs.workers import WorkerConfig, WorkerPool, reserve_port
from ccpipe.stages.attest.rvps import sample_message
from ccpipe.stages.attest.verifiers import Binding, VerifierConfig, verifier_for
from ccpipe.stages.attest.verifiers.emulated import emulated_roots_in

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
        if req.devices:
            raise ValueError("the bench's verifier-only appraiser does not verify devices' evidence")
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


async def serve(data_dir: Path, nats_url: str, url_file: Path, port: int) -> None:
    """A KBS worker whose appraiser is the verifier alone (``--appraiser verifier``)."""
    nc = await connect(nats_url, name="bench-kbs")
    kbs = await open_kbs(nc.jetstream(), data_dir, allow_emulated=True, appraiser=VerifierOnly(data_dir),
                         inline_appraisal=True, auth_per_minute=0)  # one client by design: no per-client rate
    kbs.releaser.policies = BuiltinOnly(kbs.releaser.policies.service)  # type: ignore[attr-defined]
    async with serve_http(kbs, port=port, reuse_port=True) as url:
        url_file.write_text(url)
        await asyncio.Event().wait()


@contextlib.contextmanager
def kbs_processes(
    appraiser: str, workers: int, data_dir: Path, nats_url: str, root: Path
) -> Iterator[tuple[str, list[int]]]:
    """``workers`` KBS processes on one port: ``ccpipe kbs serve``'s pool, or verifier-only ones."""
    if appraiser == "service":
        cfg = WorkerConfig(data_dir=data_dir, nats_url=nats_url, host="127.0.0.1", port=0, allow_emulated=True,
                           inline_appraisal=workers > 1, auth_per_minute=0)  # one client address by design
        with WorkerPool(cfg, workers) as pool_url:
            yield pool_url, []
        return
    holder = reserve_port("127.0.0.1")
    port = holder.getsockname()[1]
    procs = []
    try:
        for w in range(workers):
            url_file = root / f"url-{appraiser}-{workers}-{w}"
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir), nats_url, str(url_file),
                                           str(port)]))
            while not url_file.exists():
                if procs[-1].poll() is not None:
                    raise RuntimeError("a verifier-only KBS process did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        holder.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RawHttp:
    """HTTP/1.1 with keep-alive on asyncio streams: the clients' :class:`~ccpipe.stages.attest.kbs.client.Transport`.

    Idle connections are reused first-in first-out, so requests spread over every connection
    (and so over the KBS processes the kernel gave them to). Expects what the KBS sends: a
    ``Content-Length`` body, the session in ``Set-Cookie``.
    """

    def __init__(self, url: str) -> None:
        """Connect to ``url`` (``http://host:port``) as needed."""
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        self.host, self.port = host, int(port)
        self._idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()

    async def request(self, method: str, path: str, body: bytes | None, session: str | None,
                      bearer: str | None = None) -> tuple[int, bytes, str | None]:
        """One request; returns (status, body, session cookie set by the KBS)."""
        reader, writer = self._idle.popleft() if self._idle else await asyncio.open_connection(self.host, self.port)
        head = [f"{method} /kbs/v0/{path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body or b'')}"]
        if body:
            head.append("Content-Type: application/json")
        if session:
            head.append(f"Cookie: {COOKIE}={session}")
        if bearer:
            head.append(f"Authorization: Bearer {bearer}")
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + (body or b""))
        status = int((await reader.readline()).split()[1])
        length, cookie, keep = 0, None, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "set-cookie" and value.startswith(COOKIE + "="):
                cookie = value.split(";", 1)[0].partition("=")[2]
            elif name == "connection" and value.lower() == "close":
                keep = False
        data = await reader.readexactly(length)
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, data, cookie

    def close(self) -> None:
        """Close the idle connections."""
        while self._idle:
            self._idle.popleft()[1].close()


async def run_clients(
    url: str, backend: EmulatedSnpBackend, handshakes: int, clients: int, client_http: str = "raw"
) -> tuple[float, list[float]]:
    """``handshakes`` full exchanges by ``clients`` concurrent clients; returns (seconds, latencies)."""
    latencies: list[float] = []
    queue = iter(range(handshakes))
    pooled = RawHttp(url) if client_http == "raw" else None
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for _ in queue:
                # raw-per-guest: every handshake opens its own connection, as a guest talking to
                # the KBS directly would (not through a keep-alive proxy).
                own = RawHttp(url) if client_http == "raw-per-guest" else None
                t0 = time.perf_counter()
                try:
                    key = await fetch_resource(url, backend, f"ccpipe/{WORKLOAD}/image-key", workload_id=WORKLOAD,
                                               tee="snp", init_data=INITDATA, http=http, transport=own or pooled)
                finally:
                    if own is not None:
                        own.close()
                latencies.append(time.perf_counter() - t0)
                assert key == b"K" * 32

        start = time.perf_counter()
        try:
            await asyncio.gather(*(worker() for _ in range(clients)))
        finally:
            if pooled is not None:
                pooled.close()
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
        jwe = jose.encrypt_flattened(b"K" * 32, import_tee_pubkey(session.tee_pubkey))
        for _ in range(2):
            signature_header(key, event.canonical_bytes())
        t2 = time.perf_counter()
        session.decrypt(orjson.dumps(jwe))
        t3 = time.perf_counter()
        server.append((t2 - t1) * 1e3)
        client.append((t1 - t0 + t3 - t2) * 1e3)
    return {"server": statistics.median(server), "client": statistics.median(client)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its reaped children) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def kbs_pids(url_pids: list[int]) -> list[int]:
    """The KBS worker processes: those given, else this process's spawned children."""
    if url_pids:
        return url_pids
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def bench(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="kbs-bench-"))
    data_dir = root / "data"
    data_dir.mkdir()
    nats = EmbeddedNats(root / "nats").start()
    try:
        nc = await connect(nats.url, name="bench")
        await provision_stream(nc.jetstream())
        backend = EmulatedSnpBackend(data_dir, host_data=initdata_digest(INITDATA.decode()))
        floor = floor_ms(data_dir, backend)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"cores available: {os.cpu_count()}; load average before the run: {load}; "
              f"handshakes per run: {args.handshakes}; clients' HTTP: {args.client_http}")
        print(f"floor (crypto only, one core): server {floor['server']:.2f} ms/handshake "
              f"(= {1000 / floor['server']:.0f}/s), client {floor['client']:.2f} ms")
        print("CPU ms per handshake: kbs = all KBS workers, client = this process (the N clients), nats = nats-server")
        for appraiser in args.appraiser.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                with kbs_processes(appraiser, workers, data_dir, nats.url, root) as (url, pids):
                    admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
                    await admin.set_reference_values(sample_message({
                        f"scope/{WORKLOAD}/init_data_digest": [initdata_digest(INITDATA.decode()).hex()],
                        f"scope/{WORKLOAD}/snp_launch_measurement": [backend.measurement.hex()],
                    }))
                    # as the sign stage does: the workload's [tee] requirements first, then its key
                    requirements = TeeRequirements(types=[TeeType.SNP], allow_emulated=True)
                    await admin.set_resource(requirements_path(WORKLOAD), requirements.model_dump_json().encode())
                    await admin.set_resource(f"ccpipe/{WORKLOAD}/image-key", b"K" * 32)
                    # warm up: caches, memo, connections, CPU clocks
                    await run_clients(url, backend, 300, 8, args.client_http)
                    servers = kbs_pids(pids)
                    for clients in (int(c) for c in args.clients.split(",")):
                        # The host's speed drifts (shared machine): the floor again, beside each line.
                        now_floor = floor_ms(data_dir, backend, rounds=60)["server"]
                        rates, p50s, p99s, cpu = [], [], [], {"kbs": 0.0, "client": 0.0, "nats": 0.0}
                        for _ in range(args.repeat):
                            k0, c0, n0 = sum(map(cpu_seconds, servers)), time.process_time(), cpu_seconds(nats.pid or 0)
                            seconds, lat = await run_clients(url, backend, args.handshakes, clients,
                                                             args.client_http)
                            k1, c1, n1 = sum(map(cpu_seconds, servers)), time.process_time(), cpu_seconds(nats.pid or 0)
                            rates.append(args.handshakes / seconds)
                            p50s.append(statistics.median(lat) * 1e3)
                            p99s.append(percentile(lat, 0.99) * 1e3)
                            for name, used in (("kbs", k1 - k0), ("client", c1 - c0), ("nats", n1 - n0)):
                                cpu[name] += used / args.handshakes * 1e3 / args.repeat
                        print(f"appraiser={appraiser:8s} workers={workers} clients={clients:3d}: "
                              f"{statistics.median(rates):7.1f} handshakes/s, p50 {statistics.median(p50s):6.1f} ms, "
                              f"p99 {statistics.median(p99s):6.1f} ms (median of {args.repeat}); CPU ms/handshake "
                              f"kbs {cpu['kbs']:.2f}, client {cpu['client']:.2f}, nats {cpu['nats']:.2f}; "
                              f"floor now {now_floor:.2f} ms", flush=True)
        await nc.close()
    finally:
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=600, help="handshakes per measured run")
    parser.add_argument("--clients", default="1,8,16", help="concurrent clients, comma-separated")
    parser.add_argument("--workers", default="1,2", help="KBS worker processes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (medians are printed)")
    parser.add_argument("--appraiser", default="verifier,service")
    parser.add_argument("--client-http", choices=("raw", "raw-per-guest", "aiohttp"), default="raw",
                        help="the clients' HTTP: a minimal client sharing keep-alive connections (default), the same "
                             "with a new connection per handshake, or the product client's aiohttp session")
    parser.add_argument("--serve", nargs=4, metavar=("DATA_DIR", "NATS_URL", "URL_FILE", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        data_dir, nats_url, url_file, port = args.serve
        asyncio.run(serve(Path(data_dir), nats_url, Path(url_file), int(port)))
        return
    # The clients run on uvloop like the KBS workers: the load generator's own event loop is
    # part of every measured latency, and it shares the two cores with the KBS.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bench(args))


if __name__ == "__main__":
    main()
