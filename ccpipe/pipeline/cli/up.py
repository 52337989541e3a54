"""``ccpipe up``: the embedded default (servers, stream, stages) supervised in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ccpipe.enclave_runner.tee import hardware_backend
from ccpipe.pipeline.app import (
    SERVICES_AFTER_STAGES,
    SERVICES_BEFORE_STAGES,
    bounded,
    embedded_runner_nodes,
    provision_as_admin,
    running_services,
    stage_specs,
)
from ccpipe.pipeline.cli.common import print_json, say
from ccpipe.pipeline.cli.endpoints import print_endpoints
from ccpipe.pipeline.services import Endpoints, embedded_services, write_endpoints
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.pipeline.telemetry.http import serve_observability
from ccpipe.schemas.config import Settings


@asynccontextmanager
async def running_pipeline(settings: Settings) -> AsyncIterator[Endpoints]:
    """Every service of the embedded default (servers, stream, stages) until the block ends."""
    with embedded_services(settings, runner_nodes=embedded_runner_nodes()) as eps:
        await provision_as_admin(settings, eps.nats_url)
        async with running_services(settings, eps, SERVICES_BEFORE_STAGES) as eps:
            write_endpoints(settings, eps)
            specs = stage_specs(settings, eps)
            async with (
                bounded(run_stages(eps.nats_url, settings, specs, instance=socket.gethostname()), "stages"),
                running_services(settings, eps, SERVICES_AFTER_STAGES) as eps,
            ):
                write_endpoints(settings, eps)
                yield eps


def embedded_emulation(settings: Settings, *, production: bool = False) -> tuple[Settings, str]:
    """The settings the embedded default runs with, and the line that says whether it accepts
    emulated TEE evidence (and why).

    ``production`` refuses it whatever else says so; an explicit ``CCPIPE_ALLOW_EMULATED`` is
    kept; otherwise it is accepted only on a machine with no TEE (the embedded node is then an
    emulated one), and refused where a hardware TEE is present.
    """
    hardware = hardware_backend()
    if production:
        allow, why = False, "refused (--production), whatever a workload allows"
    elif "allow_emulated" in settings.model_fields_set:
        allow = settings.allow_emulated
        why = "accepted (CCPIPE_ALLOW_EMULATED); use --production to refuse it" if allow else \
            "refused (CCPIPE_ALLOW_EMULATED=false)"
    elif hardware is not None:
        allow, why = False, f"refused: this machine has a TEE ({hardware}); CCPIPE_ALLOW_EMULATED=true accepts it"
    else:
        allow, why = True, "accepted: this machine has no TEE; use --production to refuse it"
    return settings.model_copy(update={"allow_emulated": allow}), f"emulated TEE evidence is {why}"


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Run every service in the foreground until Ctrl-C or SIGTERM."""
    settings, emulation = embedded_emulation(settings, production=args.production)
    # the first line, before anything starts: whether keys may go to emulated TEEs
    print(emulation, file=sys.stderr if args.json else sys.stdout, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve_observability(settings) as metrics_url, running_pipeline(settings) as eps:
        if args.json:
            print_json(eps.model_dump(mode="json"))
        else:
            names = ", ".join(s.name for s in stage_specs(settings, eps)) or "none"
            say(f"ccpipe is up (data directory {settings.data_dir}); stages: {names}")
            print_endpoints(eps)
            if metrics_url:
                say(f"metrics and health: {metrics_url}/metrics, /healthz, /readyz (also on the KBS and audit API)")
            say("Press Ctrl-C to stop.")
        await stop.wait()
    say("ccpipe stopped cleanly.")
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``up`` command."""
    p = add("up", cmd_up, "run every service of the embedded default in the foreground (Ctrl-C stops)")
    p.add_argument("--production", action="store_true",
                   help="refuse emulated TEE evidence whatever CCPIPE_ALLOW_EMULATED or a workload says")
