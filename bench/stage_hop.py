"""Events per second through one stage hop (publish → handler → next event stored).

ccpipe's stage runtime (FastStream pull consumer, event parsing, de-duplicated publish, ack
after store) is compared with a raw nats-py loop doing the same hop by hand (fetch, publish
the output and wait for its ack, ack the input), on the same embedded nats-server, in the
same run. Prints the median of --runs runs.

    .venv/bin/python bench/stage_hop.py [--events 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig

from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher, connect, provision_stream
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, WorkloadExited, WorkloadRunning

DIGEST = "sha256:" + "ab" * 32


def inputs(n: int, run: str) -> list[Event]:
    return [Event(type=EventType.WORKLOAD_RUNNING, workload_id=f"{run}-w{i % 50}", source=Source(component="runner"),
                  payload=WorkloadRunning(node_id="n1", image_digest=DIGEST)) for i in range(n)]


async def publish_all(publisher: EventPublisher, events: list[Event]) -> None:
    sem = asyncio.Semaphore(256)

    async def one(e: Event) -> None:
        async with sem:
            await publisher.publish(e)

    await asyncio.gather(*(one(e) for e in events))


async def wait_outputs(js: object, subject: str, n: int) -> None:
    while True:
        info = await js.stream_info(EVENTS_STREAM, subjects_filter=subject)  # type: ignore[attr-defined]
        if sum((info.state.subjects or {}).values()) >= n:
            return
        await asyncio.sleep(0.02)


async def ccpipe_hop(url: str, n: int, run: str) -> float:
    async def handler(event: Event) -> Sequence[Output]:
        return [Output(EventType.WORKLOAD_EXITED,
                       WorkloadExited(node_id="n1", exit_code=0, duration_s=0.0, output_digest=DIGEST))]

    nc = await connect(url, name="bench")
    js = nc.jetstream()
    events = inputs(n, run)
    # signed as a runner's, queued before the stage starts: measures the hop only (its input check included)
    await publish_all(EventPublisher(js, signer=event_signer(load_settings().data_dir)), events)
    spec = StageSpec(f"bench-{run}", EventType.WORKLOAD_RUNNING, (EventType.WORKLOAD_EXITED,), handler)
    t0 = time.perf_counter()
    async with run_stages(url, load_settings(), [spec]):
        await wait_outputs(js, "ccpipe.evt.*.workload.exited", n)
        elapsed = time.perf_counter() - t0
    await nc.close()
    return n / elapsed


async def raw_hop(url: str, n: int, run: str) -> float:
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream()
    events = inputs(n, run)
    await publish_all(EventPublisher(js), events)
    t0 = time.perf_counter()
    sub = await js.pull_subscribe("ccpipe.evt.*.workload.running", durable=f"raw-{run}",
                                  stream=EVENTS_STREAM, config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    done = 0
    while done < n:
        for m in await sub.fetch(1, timeout=5):
            wl = m.subject.split(".")[2]
            await js.publish(f"ccpipe.evt.{wl}.workload.exited", m.data, stream=EVENTS_STREAM,
                             headers={"Nats-Msg-Id": f"raw-{m.metadata.sequence.stream}"})
            await m.ack()
            done += 1
    elapsed = time.perf_counter() - t0
    await nc.close()
    return n / elapsed


async def main(n: int, runs: int) -> None:
    ours: list[float] = []
    raw: list[float] = []
    version = (0, 0, 0)
    for r in range(runs):
        for label, hop, results in (("raw", raw_hop, raw), ("cc", ccpipe_hop, ours)):
            # A fresh server per measurement, so neither side sees the other's events.
            with tempfile.TemporaryDirectory() as d:
                server = EmbeddedNats(Path(d)).start()
                version = server.version
                try:
                    nc = await connect(server.url, name="bench")
                    await provision_stream(nc.jetstream())
                    await nc.close()
                    results.append(await hop(server.url, n, f"{label}{r}"))
                finally:
                    server.stop()
        print(f"run {r + 1}: ccpipe stage {ours[-1]:8.0f} ev/s   raw nats-py loop {raw[-1]:8.0f} ev/s", flush=True)
    mo, mr = statistics.median(ours), statistics.median(raw)
    print(f"\none stage hop, {n} events, median of {runs} runs (nats-server {'.'.join(map(str, version))}):")
    print(f"  ccpipe stage runtime : {mo:8.0f} events/s")
    print(f"  raw nats-py loop     : {mr:8.0f} events/s")
    print(f"  ratio ccpipe / raw   : {mo / mr:8.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.events, a.runs))
