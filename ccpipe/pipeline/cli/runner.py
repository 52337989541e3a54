"""``ccpipe runner``: run one enclave runner node against the running services."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from typing import Any

from ccpipe.enclave_runner.agent import default_node_id, run_node_agent
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.pipeline.cli.common import say
from ccpipe.pipeline.enrolment_bus import mirrored_enrolments
from ccpipe.pipeline.nats_auth import issue_embedded_identity, runner_identity
from ccpipe.pipeline.services import find_endpoints
from ccpipe.pipeline.telemetry.http import serve_observability
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.nodes import NODE_ID_PATTERN

TEES = ("emulated-snp", "emulated-tdx", "tsm", "sample")


async def cmd_runner(settings: Settings, args: argparse.Namespace) -> int:
    """Announce the node, launch the workloads scheduled on it, until interrupted."""
    node_id = args.node_id or default_node_id(args.tee)
    if not re.match(NODE_ID_PATTERN, node_id):
        raise InvalidInput(
            f"node id {node_id!r} is not valid", hint="use lower-case letters, digits, '.', '_' and '-', like node-1",
            code="runner.node_id.invalid",
        )
    if args.capacity < 1:
        raise InvalidInput("--capacity must be at least 1", code="runner.capacity.invalid")
    eps = find_endpoints(settings)
    if eps.embedded and issue_embedded_identity(settings, runner_identity(node_id)):
        say(f"issued the NATS identity {runner_identity(node_id)} from the embedded installation "
            f"of {settings.data_dir}")
    node = RunnerNode(node_id=node_id, tee=args.tee, capacity=args.capacity)
    async with (
        serve_observability(settings) as metrics_url,
        mirrored_enrolments(settings, eps.nats_url, runner_identity(node_id)),
        run_node_agent(settings, eps, node),
    ):
        say(f"runner node {node_id} ({args.tee}) is announced and waits for scheduled workloads; Ctrl-C stops it")
        if metrics_url:
            say(f"metrics and health on {metrics_url}/metrics, /healthz, /readyz")
        await asyncio.Event().wait()
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The node agent: runner."""
    p = add("runner", cmd_runner, "run one enclave runner node (announce it, launch what is scheduled on it)",
            json_flag=False)
    add_runner_arguments(p)


def add_runner_arguments(p: argparse.ArgumentParser, what: str = "") -> None:
    """The options of a runner node (``ccpipe runner``, ``ccpipe serve runner``)."""
    suffix = f" {what}" if what else ""
    p.add_argument("--node-id", help=f"node id (default: <host>-<tee>){suffix}")
    p.add_argument("--tee", choices=TEES, default="emulated-snp",
                   help=f"evidence backend: emulated SEV-SNP/TDX, configfs-tsm on a real TEE guest, or sample{suffix}")
    p.add_argument("--capacity", type=int, default=2, help=f"workloads run at once (default 2){suffix}")
