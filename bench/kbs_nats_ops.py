"""CPU per NATS operation of one KBS handshake: what each round trip costs the KBS and nats-server.

A full RCAR handshake makes six NATS round trips (see ``bench/kbs_handshake.py``): three signed
events stored (``attestation.challenged``, ``attestation.verified`` with the evidence,
``key.released``), one spent nonce (a KV create) and two resource reads (the workload's TEE
requirements and the resource). This bench runs each of them alone, ``--ops`` times with
``--concurrency`` in flight, through the KBS's own code (:class:`AuditEvents` on
:func:`publisher_for`, :class:`NatsKvBackend`, :class:`NatsNonceLedger`) against a real
nats-server, and prints the CPU milliseconds per operation of this process (the KBS side) and of
nats-server, beside a bare ``js.publish`` of the same sizes (nats-py alone, no event, no signature).

It tells how far trimming round trips can move the handshake figure: CPU per handshake is what
bounds handshakes/s when the cores are shared (2 cores / total CPU ms per handshake).

Run: ``.venv/bin/python bench/kbs_nats_ops.py [--ops 2000] [--concurrency 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import uvloop

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.pipeline.bus import EVENTS_STREAM, connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.stages.attest.kbs.appraiser import AppraisalOutcome, evidence_digest
from ccpipe.stages.attest.kbs.audit import AuditEvents
from ccpipe.stages.attest.kbs.binding import runtime_data_digest, tee_pubkey_thumbprint
from ccpipe.stages.attest.kbs.client import KbsSession
from ccpipe.stages.attest.kbs.core import evidence_bytes
from ccpipe.stages.attest.kbs.service import SESSION_TIMEOUT_S, publisher_for
from ccpipe.stages.attest.kbs.sessions import SessionStore
from ccpipe.stages.attest.kbs.store_nats import NatsKvBackend, NatsNonceLedger
from ccpipe.stages.attest.verifiers import Binding, VerifierConfig, verifier_for
from ccpipe.stages.attest.verifiers.emulated import emulated_roots_in

WORKLOAD = "bench"
INITDATA = 'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"ccpipe.toml" = "workload = \\"bench\\""\n'


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def verified_outcome(data_dir: Path) -> tuple[bytes, AppraisalOutcome, str]:
    """Emulated SEV-SNP evidence as a guest sends it (JSON, certificate chain included), its
    verified outcome and the TEE key's thumbprint: what ``attestation.verified`` carries."""
    init = initdata_digest(INITDATA)
    backend = EmulatedSnpBackend(data_dir, host_data=init)
    session = KbsSession("http://unused", backend, workload_id=WORKLOAD, tee="snp")
    report_data = runtime_data_digest("n" * 44, session.tee_pubkey)
    produced = backend.get_evidence(report_data, host_data=init)
    roots = emulated_roots_in(data_dir)
    verifier = verifier_for("snp", VerifierConfig(allow_emulated=True, emulated_snp_roots_pem=roots.snp_roots_pem,
                                                  emulated_tdx_root_pem=roots.tdx_root_pem))
    claims = verifier.verify(produced.evidence, Binding(report_data=report_data, init_data_digest=init))
    # The bytes the KBS keeps: the guest's JSON evidence re-encoded compactly (core.evidence_bytes).
    evidence = evidence_bytes(orjson.loads(produced.evidence), "primary_evidence")
    outcome = AppraisalOutcome(
        ok=True, tee="snp", backend="emulated", emulated=True, claims=claims.model_dump(mode="json"),
        ear_status="affirming", trust_vector={"executables": 2, "hardware": 2}, policy_id="default",
        policy_digest="sha256:" + "0" * 64, evidence_digest=evidence_digest(evidence),
        measurement=claims.measurement, tcb=dict(claims.tcb))
    return evidence, outcome, tee_pubkey_thumbprint(session.tee_pubkey)


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="kbs-nats-ops-"))
    data_dir = root / "data"
    data_dir.mkdir()
    nats = EmbeddedNats(root / "nats").start()
    try:
        nc = await connect(nats.url, name="bench-kbs-nats-ops")
        js = nc.jetstream()
        await provision_stream(js)
        events = AuditEvents(publisher_for(js, data_dir))
        resources = await NatsKvBackend.open(js)
        nonces = await NatsNonceLedger.open(js, session_timeout_s=SESSION_TIMEOUT_S)
        sessions = SessionStore.for_data_dir(data_dir)
        await resources.put(f"ccpipe/{WORKLOAD}/image-key", b"r" * 300)  # a sealed record's size
        evidence, outcome, thumbprint = verified_outcome(data_dir)
        token = {"jti": uuid.uuid4().hex, "ccpipe": {"workload_id": WORKLOAD, "attestation_event_id": "e" * 26}}
        sizes: dict[str, int] = {}

        async def challenged() -> None:
            session = sessions.create("snp", workload_id=WORKLOAD, node_id=None, hash_alg="sha384")
            event = await events.attestation_challenged(session, event_id=uuid.uuid4().hex, request_id=uuid.uuid4().hex)
            sizes["challenged"] = len(event.canonical_bytes())

        async def verified() -> None:
            event = await events.attestation_verified(
                workload_id=WORKLOAD, outcome=outcome, evidence=evidence, token_id=uuid.uuid4().hex, node_id=None,
                thumbprint=thumbprint, request_id=uuid.uuid4().hex, event_id=uuid.uuid4().hex)
            sizes["verified"] = len(event.canonical_bytes())

        async def released() -> None:
            event = await events.key_released(workload_id=WORKLOAD, resource=f"ccpipe/{WORKLOAD}/image-key",
                                              token=token, thumbprint=thumbprint, policy_id="default",
                                              rule="default", request_id=uuid.uuid4().hex)
            sizes["released"] = len(event.canonical_bytes())

        async def nonce() -> None:
            await nonces.spend(sessions.create("snp", workload_id=WORKLOAD, node_id=None, hash_alg="sha384"))

        async def read() -> None:
            assert await resources.get(f"ccpipe/{WORKLOAD}/image-key") is not None

        def bare(size: int) -> Callable[[], Awaitable[Any]]:
            payload = b"x" * size
            return lambda: js.publish(f"ccpipe.evt.{WORKLOAD}.attestation.challenged", payload, stream=EVENTS_STREAM,
                                      headers={"Nats-Msg-Id": uuid.uuid4().hex})

        for first in (challenged, verified, released):  # their sizes, for the bare publishes
            await first()
        ops: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (f"event attestation.challenged ({sizes['challenged']} B)", challenged),
            (f"event attestation.verified ({sizes['verified']} B)", verified),
            (f"event key.released ({sizes['released']} B)", released),
            ("nonce spend (KV create)", nonce),
            ("resource read (KV direct get)", read),
            (f"bare js.publish {sizes['challenged']} B", bare(sizes["challenged"])),
            (f"bare js.publish {sizes['verified']} B", bare(sizes["verified"])),
        ]
        print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.ops} operations each, "
              f"{args.concurrency} in flight; CPU ms per operation")
        for name, op in ops:
            async def repeat(count: int, op: Callable[[], Awaitable[Any]] = op) -> None:
                todo = iter(range(count))

                async def worker() -> None:
                    for _ in todo:
                        await op()

                await asyncio.gather(*(worker() for _ in range(args.concurrency)))

            await repeat(min(200, args.ops))  # warm up
            c0, n0 = time.process_time(), cpu_seconds(nats.pid or 0)
            await repeat(args.ops)
            c1, n1 = time.process_time(), cpu_seconds(nats.pid or 0)
            print(f"{name:44s} kbs {(c1 - c0) / args.ops * 1e3:6.3f}  nats {(n1 - n0) / args.ops * 1e3:6.3f}",
                  flush=True)
        await nc.close()
    finally:
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations per kind")
    parser.add_argument("--concurrency", type=int, default=4, help="operations in flight (a KBS worker's share)")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
