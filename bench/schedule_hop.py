"""Scheduling decisions per second: the ``schedule`` stage next to a stage hop that decides nothing.

Both run under ccpipe's stage runtime on the same embedded nats-server, in the same run, over
the same queued ``pushed`` events. The ``schedule`` stage reads the node inventory from the
``CCPIPE_NODES`` bucket (``--nodes`` announced nodes of mixed TEEs) and admits those with an
attestation record in ``CCPIPE_NODE_ATTESTATIONS`` and a heartbeat signed by its key, folds new trail events
into its placement view and picks the least-loaded fitting node; the peer returns a fixed
``scheduled`` event. The difference is what placement costs per workload. Also prints the
pure :func:`choose_node` time over the same nodes. Prints medians of ``--runs`` runs.

    .venv/bin/python bench/schedule_hop.py [--workloads 300] [--nodes 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from ccpipe.enclave_runner.join import public_node_key
from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher, connect, provision_stream
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Submitted
from ccpipe.schemas.nodes import NodeAttestation
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.attest.kbs.node_join_nats import node_attestations_bucket
from ccpipe.stages.deploy.handler import deploy_stages
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import announce
from ccpipe.stages.deploy.scheduler import choose_node

DIGEST = "sha256:" + "ab" * 32
TEES = [TeeType.SNP, TeeType.TDX, TeeType.SGX]


def nodes(n: int) -> list[NodeAnnouncement]:
    return [NodeAnnouncement(node_id=f"node-{i:04d}", tee=TEES[i % 3], backend="configfs-tsm", emulated=False,
                             tcb={"svn": i % 7}, capacity=Capacity(total=10_000, free=10_000)) for i in range(n)]


def attested(node: NodeAnnouncement, key: Ed25519PrivateKey) -> NodeAttestation:
    """The record the attestation service would keep for ``node`` (verified as it announces itself)."""
    return NodeAttestation(node_id=node.node_id, node_key=public_node_key(key),
                           tee=node.tee, backend="hardware", emulated=False, tcb=node.tcb, product="bench",
                           measurement="00" * 48, evidence_digest="sha256:" + "00" * 32,
                           attested_at=datetime.now(UTC), event_id="bench")


async def queue_workloads(js: JetStreamContext, count: int, run: str, data_dir: Path) -> None:
    spec = WorkloadSpec.model_validate({"workload": {"name": "bench"}, "tee": {"types": ["snp", "tdx"]}})
    pub = EventPublisher(js, signer=event_signer(data_dir))  # signed as the git trigger's and push's
    for i in range(count):
        wl = f"{run}-w{i}"
        await pub.publish(Event(type=EventType.SUBMITTED, workload_id=wl, source=Source(component="submit"),
                                payload=Submitted(repo="/r", ref="r", old_commit="0" * 40, new_commit="1" * 40,
                                                  pusher="b", spec=spec)))
        await pub.publish(Event(type=EventType.PUSHED, workload_id=wl, source=Source(component="push"),
                                payload=Pushed(registry="r", repository="ccpipe/bench", image_digest=DIGEST,
                                               reference=f"docker://r/ccpipe/bench@{DIGEST}")))


async def outputs(js: JetStreamContext) -> int:
    info = await js.stream_info(EVENTS_STREAM, subjects_filter="ccpipe.evt.*.scheduled")
    return sum((info.state.subjects or {}).values())


async def one_run(count: int, n_nodes: int, real: bool, run: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        server = EmbeddedNats(Path(d) / "nats").start()
        try:
            nc = await connect(server.url, name="bench")
            js = nc.jetstream()
            await provision_stream(js)
            key = Ed25519PrivateKey.generate()  # every node's attested key, here one for all
            attestations = await node_attestations_bucket(js)
            for node in nodes(n_nodes):
                await attestations.put(node.node_id, attested(node, key).model_dump_json().encode())
                await announce(js, node, ttl=600.0, sign=key.sign)
            settings = load_settings(nats_url=server.url, data_dir=Path(d) / "data")
            await queue_workloads(js, count, run, settings.data_dir)
            if real:
                specs = [s for s in deploy_stages(settings, Endpoints(nats_url=server.url)) if s.name == "schedule"]
            else:
                async def fixed(event: Event) -> Sequence[Output]:
                    return [Output(EventType.SCHEDULED, Scheduled(node_id="node-0000", tee=TeeType.SNP, backend="b"))]
                specs = [StageSpec("schedule", EventType.PUSHED, (EventType.SCHEDULED,), fixed)]
            t0 = time.perf_counter()
            async with run_stages(server.url, settings, specs):
                while await outputs(js) < count:
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - t0
            await nc.close()
            return count / elapsed
        finally:
            server.stop()


async def main(count: int, n_nodes: int, runs: int) -> None:
    real: list[float] = []
    peer: list[float] = []
    for r in range(runs):
        peer.append(await one_run(count, n_nodes, False, f"p{r}"))
        real.append(await one_run(count, n_nodes, True, f"s{r}"))
        print(f"run {r + 1}: schedule stage {real[-1]:7.0f}/s   fixed-output stage {peer[-1]:7.0f}/s", flush=True)
    announced = nodes(1000)
    spec = WorkloadSpec.model_validate({"workload": {"name": "b"}, "tee": {"types": ["snp"], "min_tcb": {"svn": 3}}})
    t0 = time.perf_counter()
    reps = 200
    for _ in range(reps):
        choose_node(announced, spec.tee, allow_emulated=True, load={})
    pure_us = (time.perf_counter() - t0) / reps * 1e6
    mr, mp = statistics.median(real), statistics.median(peer)
    print(f"\n{count} workloads, {n_nodes} nodes, median of {runs} runs:")
    print(f"  schedule stage (inventory + trail view + choice) : {mr:7.0f} decisions/s  ({1e3 / mr:6.2f} ms each)")
    print(f"  fixed-output stage (same runtime, no decision)    : {mp:7.0f} events/s     ({1e3 / mp:6.2f} ms each)")
    print(f"  placement cost per workload                       : {1e3 / mr - 1e3 / mp:6.2f} ms")
    print(f"  choose_node alone over 1000 nodes                 : {pure_us:7.0f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", type=int, default=300)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.workloads, a.nodes, a.runs))
