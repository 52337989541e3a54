"""Benchmark: launch latency of a 64 MiB encrypted image, split by step, with peers.

Starts a real nats-server, docker-registry and the embedded KBS in a temporary data dir,
prepares one workload as the earlier stages would (a busybox image with 64 MiB of random
files in one gzip layer, encrypted for the KBS, cosign-signed, pushed, key + cosign key +
reference values registered), then launches it ``--runs`` times on an emulated SEV-SNP node
(each launch a new ``scheduled`` event: new ephemeral key, new attestation, fresh workspace)
and prints the median seconds of each step: attest, key, pull, verify, decrypt, unpack, start
(process spawned) and run (bwrap sandbox set up, ``exit 0``, torn down).

Peers, measured in the same run on the same bytes:

* pull — ``skopeo copy docker://…@digest oci:DIR`` (no signature pull, no verification);
* unpack — GNU ``tar -xzf`` of the same plain layer (no whiteouts, no path checks);
* run — ``/bin/true`` started by ``subprocess.run`` with no sandbox.

Usage: ``.venv/bin/python bench/launch_latency.py [--size-mib 64] [--runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccpipe.enclave_runner.launch import STEPS, Launcher
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.oci.layout import OciLayout
from ccpipe.pipeline.bus import EventPublisher, connect, provision_stream
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, new_event_id
from ccpipe.schemas.events import EventType
from ccpipe.stages.attest.kbs.service import serve_kbs
from tests.integration.enclave_runner.runner_launch_helpers import busybox_layer, prepare_workload

NODE = "bench-node"


def payload_layer(size_mib: int) -> bytes:
    """busybox + ``size_mib`` MiB of random data in 4 files, as an uncompressed tar."""
    quarter = (size_mib << 20) // 4
    extra = [("file", f"data/blob{i}", os.urandom(quarter), 0o644) for i in range(4)]
    return busybox_layer("exit 0\n", extra)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


async def main(size_mib: int, runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ccpipe-bench-launch-"))
    nats = EmbeddedNats(tmp / "nats").start()
    reg = EmbeddedRegistry(tmp / "registry").start()
    try:
        settings = Settings(data_dir=tmp / "data", nats_url=nats.url, registry=reg.address, allow_emulated=True)
        nc = await connect(nats.url, name="bench-launch")
        js = nc.jetstream()
        await provision_stream(js)
        async with serve_kbs(settings, Endpoints(nats_url=nats.url, registry=reg.address)) as eps:
            assert eps.kbs_url
            layer = payload_layer(size_mib)
            print(f"preparing a {len(layer) / 2**20:.1f} MiB image (encrypt, sign, push, register)…", flush=True)
            wl = await prepare_workload(js, settings, eps, "bench-launch", tmp / "prep", [layer], node_id=NODE)
            publisher = EventPublisher(js, signer=event_signer(settings.data_dir))

            async def publish(event: Event, msg_id: str) -> None:
                await publisher.publish(event, msg_id)

            async def lookup(workload_id: str, etype: EventType) -> Event:
                return await workload_event(js, workload_id, etype, trust=input_trust(settings.data_dir))

            launcher = Launcher(settings, RunnerNode(NODE), kbs_url=eps.kbs_url, publish=publish, lookup=lookup)
            samples: dict[str, list[float]] = {}
            totals: list[float] = []
            for _ in range(runs):
                scheduled = wl.scheduled.model_copy(update={"id": new_event_id()})
                start = time.perf_counter()
                report = await launcher.launch(scheduled)
                totals.append(time.perf_counter() - start)
                if report.failure is not None:
                    raise SystemExit(f"launch failed: {report.failure.code}: {report.failure.message}")
                for step, value in report.timings.items():
                    samples.setdefault(step, []).append(value)
            kind = report.workspace_kind
            # peers on the same bytes
            skopeo = shutil.which("skopeo")
            pull_peer: list[float] = []
            for i in range(runs if skopeo else 0):
                dest = tmp / f"skopeo-{i}"
                pull_peer.append(timed([str(skopeo), "copy", "--src-tls-verify=false",
                                        f"docker://{eps.registry}/{wl.pushed.repository}@{wl.image_digest}",
                                        f"oci:{dest}:x"]))
                shutil.rmtree(dest)
            plain = OciLayout.open(tmp / "prep" / "plain")
            layer_path = plain.blob_path(plain.read_manifest(plain.resolve("plain")).layers[0].digest)
            tar_peer: list[float] = []
            for i in range(runs):
                dest = tmp / f"tar-{i}"
                dest.mkdir()
                tar_peer.append(timed(["tar", "-xzf", str(layer_path), "-C", str(dest)]))
                shutil.rmtree(dest)
            true_peer = [timed(["/bin/true"]) for _ in range(runs)]
        await nc.close()
    finally:
        reg.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):8.3f}" if values else "     n/a"

    peers = {"pull": ("skopeo copy (pull only)", pull_peer), "unpack": ("tar -xzf (no checks)", tar_peer),
             "run": ("/bin/true, no sandbox", true_peer)}
    print(f"\nlaunch latency, {size_mib} MiB image, median of {runs} launches (workspace on {kind}); seconds")
    print(f"{'step':<8} {'ccpipe':>8}   peer")
    for step in (*STEPS, "run"):
        name, values = peers.get(step, ("", []))
        print(f"{step:<8} {med(samples.get(step, []))}   {med(values) + '  ' + name if values else ''}")
    print(f"{'total':<8} {med(totals)}   (launch() end to end, events included)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.runs))
