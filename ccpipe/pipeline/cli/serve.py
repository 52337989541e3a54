"""``ccpipe serve COMPONENT``: one component of the pipeline, against the NATS servers of ``CCPIPE_NATS_URL``.

The infrastructure runs elsewhere (``ccpipe up --only nats,registry``, or an operated NATS cluster
and registry, provisioned by the admin). Any number of processes may serve the same component:
stages share their durable consumer, the KBS its queue group, the audit log its writer lease.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from ccpipe.enclave_runner.agent import default_node_id
from ccpipe.pipeline.app import COMPONENTS, check_provisioned_for, running_components
from ccpipe.pipeline.cli.common import say
from ccpipe.pipeline.cli.runner import TEES, add_runner_arguments, cmd_runner
from ccpipe.pipeline.enrolment_bus import check_own_enrolment
from ccpipe.pipeline.nats_auth import runner_identity
from ccpipe.pipeline.services import find_endpoints
from ccpipe.pipeline.telemetry.http import serve_observability
from ccpipe.schemas.config import Settings


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Check what the component needs on NATS, then run it in the foreground until Ctrl-C or SIGTERM."""
    component: str = args.component
    if component == "kbs":
        # this process *is* the KBS: the URL the others are given (CCPIPE_KBS_URL) points here
        settings = settings.model_copy(update={"kbs_url": None})
    eps = find_endpoints(settings)
    identity = runner_identity(args.node_id or default_node_id(args.tee)) if component == "runner" else component
    await check_provisioned_for(settings, eps.nats_url, identity)
    await check_own_enrolment(settings, eps.nats_url, identity, component)
    if component == "runner":
        # the node agent, with its /metrics and /readyz, as `ccpipe runner` runs it
        return await cmd_runner(settings, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    instance = f"{socket.gethostname()}-{os.getpid()}"  # replicas of one component on one host differ
    async with (
        serve_observability(settings) as metrics_url,
        running_components(settings, eps, (component,), instance=instance, identity=identity) as eps,
    ):
        where = {"kbs": eps.kbs_url, "audit": eps.audit_api_url}.get(component)
        say(f"ccpipe serves {component} as {instance} against NATS {eps.nats_url}"
            + (f"; listening on {where}" if where else "") + "; Ctrl-C stops it")
        if metrics_url:
            say(f"metrics and health: {metrics_url}/metrics, /healthz, /readyz")
        await stop.wait()
    say(f"{component} stopped cleanly.")
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``serve`` command."""
    p = add("serve", cmd_serve, "run one component against the NATS servers of CCPIPE_NATS_URL (Ctrl-C stops)",
            json_flag=False)
    p.add_argument("component", choices=COMPONENTS,
                   help="the component: a stage, the KBS, the audit log and API, or a runner node")
    add_runner_arguments(p, what=f"for 'serve runner' ({', '.join(TEES)})")
