"""``ccpipe demo``: push a sample repository and follow its workload through every stage.

The demo starts the embedded default (as ``ccpipe up`` does), makes the sample repository
(:mod:`ccpipe.pipeline.cli.demo_repository`), pushes it, prints each event of the workload as it
arrives, then the audit summary, the workload's output (checked against the ``exited`` event's
digest) and the last event's inclusion proof, checked offline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ccpipe.pipeline.app import FLOW_END
from ccpipe.pipeline.audit.offline import OfflineProofError, verify_proof_offline
from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.cli.common import say
from ccpipe.pipeline.cli.demo_repository import make_demo_repository, run_git
from ccpipe.pipeline.cli.endpoints import print_endpoints
from ccpipe.pipeline.cli.events import describe
from ccpipe.pipeline.cli.up import embedded_emulation, running_pipeline
from ccpipe.pipeline.nats_auth import OBSERVER
from ccpipe.pipeline.reader import iter_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType, WorkloadExited


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Create a sample repository, push it, and follow the workload through every stage."""
    started = time.monotonic()
    settings, emulation = embedded_emulation(settings)
    say(emulation)  # the first line: whether keys may go to emulated TEEs
    say("ccpipe demo: starting the embedded services (nats-server, registry, stages)…")
    async with running_pipeline(settings) as eps:
        print_endpoints(eps)
        bare, work = make_demo_repository(settings.data_dir / "demo", settings.data_dir)
        say(f"created {work} (ccpipe.toml, app/hello.sh, a busybox base image) and {bare} "
            "with the ccpipe post-receive hook")
        nc = await connect_as(settings, eps.nats_url, OBSERVER, name="ccpipe-demo")
        try:
            js = nc.jetstream()
            start_seq = (await js.stream_info("CCPIPE_EVENTS")).state.last_seq + 1
            say("git push origin main")
            out = await asyncio.to_thread(run_git, work, "push", "-q", "origin", "main")
            for line in out.splitlines():
                if line.strip():
                    say(f"  {line.strip()}")
            # where components are enrolled the event names the stored source, not the path: match the commit too
            commit = (await asyncio.to_thread(run_git, work, "rev-parse", "HEAD")).strip()
            return await _follow_demo(settings, eps, js, (str(bare.resolve()), commit), start_seq, args.timeout,
                                      started)
        finally:
            await nc.close()


async def _follow_demo(settings: Settings, eps: Endpoints, js: object, pushed: tuple[str, str], start_seq: int,
                       timeout: float, started: float) -> int:
    final = FLOW_END
    workload: str | None = None
    seen: list[tuple[int, str, str]] = []
    last: Event | None = None
    deadline = time.monotonic() + timeout

    async def follow() -> int:
        nonlocal workload, last
        async for stored in iter_events(js, None, follow=True, start_seq=start_seq):  # type: ignore[arg-type]
            e = stored.event
            if e is None:
                continue
            if workload is None:
                repo_of, commit_of = getattr(e.payload, "repo", None), getattr(e.payload, "new_commit", None)
                ours = e.type == EventType.SUBMITTED and (repo_of == pushed[0] or commit_of == pushed[1])
                if ours or (e.type == EventType.FAILED and e.source.component == "submit"):
                    workload = e.workload_id
                else:
                    continue
            if e.workload_id != workload:
                continue
            mark = "✗" if e.type == EventType.FAILED else "✓"
            say(f"  {mark} {e.type.value:<22} {e.source.component:<8} {describe(e)}")
            seen.append((stored.seq, e.type.value, e.digest()))
            last = e
            if e.type in final:
                return 1 if e.type == EventType.FAILED else 0
        return 1

    try:
        status = await asyncio.wait_for(follow(), timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        raise ConfigurationError(
            f"the demo workload did not finish within {timeout:.0f} s (last event: "
            f"{seen[-1][1] if seen else 'none'})",
            hint=f"inspect it with 'ccpipe events' while 'ccpipe up' runs; logs are under {settings.data_dir}",
            code="demo.timeout",
        ) from None
    say("")
    if seen:
        say(f"audit summary for workload {workload}: {len(seen)} events in CCPIPE_EVENTS "
            f"(stream sequences {seen[0][0]}–{seen[-1][0]})")
    else:
        say("audit summary: no events")
    for seq, etype, digest in seen:
        say(f"  #{seq:<5} {etype:<22} sha256:{digest}")
    if last is not None and last.type == EventType.WORKLOAD_EXITED:
        await _show_output(settings, last)
        await _show_inclusion(eps, last)
    say(f"demo {'finished' if status == 0 else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return status


async def _show_output(settings: Settings, exited: Event) -> None:
    """Print what the workload wrote, from the runner's bounded log named by the event's digest."""
    payload = exited.payload
    assert isinstance(payload, WorkloadExited)
    path = settings.data_dir / "runner" / "logs" / exited.workload_id / f"{payload.output_digest.replace(':', '-')}.log"
    for _ in range(50):  # the runner writes the log right after publishing `exited`
        if path.exists():
            break
        await asyncio.sleep(0.1)
    if not path.exists():
        say(f"workload output: not found at {path}")
        return
    data = path.read_bytes()
    ok = "sha256:" + hashlib.sha256(data).hexdigest() == payload.output_digest
    say(f"workload output ({len(data)} bytes, digest {'matches' if ok else 'DOES NOT MATCH'} the exited event):")
    for line in data.decode(errors="replace").splitlines()[:20]:
        say(f"  | {line}")


async def _show_inclusion(eps: Endpoints, event: Event, timeout: float = 10.0) -> None:
    """Fetch the event's inclusion proof from the audit API and check it with the offline verifier."""
    if not eps.audit_api_url:
        return
    url = f"{eps.audit_api_url.rstrip('/')}/api/v1/events/{event.id}/proof"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as resp:
                body = await resp.read()
                status = resp.status
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)  # 404/409: not yet logged or not yet under a checkpoint
    if status != 200:
        say(f"audit: no inclusion proof for the last event after {timeout:.0f} s (HTTP {status})")
        return
    try:
        proof = verify_proof_offline(body)
    except OfflineProofError as exc:
        say(f"audit: inclusion proof of {event.type.value} FAILED offline verification: {exc}")
        return
    say(f"audit: {event.type.value} is leaf {proof.leaf_index} of log {proof.origin!r}; its inclusion proof "
        f"checks against the signed checkpoint of size {proof.tree_size} (verified offline, stdlib only)")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``demo`` command."""
    p = add("demo", cmd_demo, "push a sample repository and follow it through every stage", json_flag=False)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the workload (300)")
