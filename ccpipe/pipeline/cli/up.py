"""``ccpipe up``: the embedded default (servers, stream, stages) supervised in the foreground.

``up`` is the infrastructure (:func:`running_infrastructure`: nats-server or a loopback cluster of
them, the registry, provisioned as admin) plus every component (:func:`ccpipe.pipeline.app.running_components`)
in one process; ``up --only nats,registry`` is the infrastructure alone, for ``ccpipe serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ccpipe.enclave_runner.tee import hardware_backend
from ccpipe.pipeline.app import COMPONENTS, embedded_runner_nodes, provision_as_admin, running_components
from ccpipe.pipeline.cli.common import print_json, say
from ccpipe.pipeline.cli.endpoints import print_endpoints
from ccpipe.pipeline.enrolment import encode_public, pinned_admin_public
from ccpipe.pipeline.nats_auth import creds_dir
from ccpipe.pipeline.services import (
    CLUSTER_SIZES,
    Endpoints,
    embedded_services,
    registry_password_file,
    write_endpoints,
)
from ccpipe.pipeline.telemetry.http import serve_observability
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import InvalidInput
from ccpipe.stages.deploy.registry_retention import serve_registry_retention

if TYPE_CHECKING:
    from ccpipe.pipeline.servers import EmbeddedRegistry

INFRASTRUCTURE = ("nats", "registry")
"""What ``--only`` may name besides the components: the servers (always run unless configured)."""


@asynccontextmanager
async def running_infrastructure(settings: Settings, *, cluster_size: int = 1) -> AsyncIterator[Endpoints]:
    """The embedded servers, with the stream and buckets provisioned as admin, until the block ends.

    An embedded registry drops the images of ended workloads as the retention settings say
    (:mod:`ccpipe.stages.deploy.registry_retention`).
    """
    registries: list[EmbeddedRegistry] = []
    with embedded_services(settings, runner_nodes=embedded_runner_nodes(), cluster_size=cluster_size,
                           registries=registries) as eps:
        await provision_as_admin(settings, eps.nats_url)
        async with AsyncExitStack() as stack:
            for registry in registries:  # stopped before the servers are
                await stack.enter_async_context(serve_registry_retention(settings, eps, registry))
            yield eps


@asynccontextmanager
async def running_pipeline(settings: Settings, components: Collection[str] = COMPONENTS, *,
                           cluster_size: int = 1) -> AsyncIterator[Endpoints]:
    """The infrastructure and ``components`` (default: all, the embedded default) until the block ends."""
    async with (
        running_infrastructure(settings, cluster_size=cluster_size) as eps,
        running_components(settings, eps, components, instance=socket.gethostname(),
                           published=functools.partial(write_endpoints, settings)) as eps,
    ):
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
    components = only_components(args.only)
    async with (
        serve_observability(settings) as metrics_url,
        running_pipeline(settings, components, cluster_size=args.cluster) as eps,
    ):
        if args.json:
            print_json(eps.model_dump(mode="json"))
        else:
            say(f"ccpipe is up (data directory {settings.data_dir}); components: {', '.join(components) or 'none'}")
            print_endpoints(eps)
            if metrics_url:
                say(f"metrics and health: {metrics_url}/metrics, /healthz, /readyz (also on the KBS and audit API)")
            if set(components) != set(COMPONENTS):
                print_serve_environment(settings, eps)
            say("Press Ctrl-C to stop.")
        await stop.wait()
    say("ccpipe stopped cleanly.")
    return 0


def only_components(only: str | None) -> tuple[str, ...]:
    """The components ``--only`` names (all without it), in :data:`COMPONENTS` order; raises for an unknown name."""
    if only is None:
        return COMPONENTS
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = names - set(COMPONENTS) - set(INFRASTRUCTURE)
    if unknown:
        raise InvalidInput(f"--only names no part called {', '.join(sorted(unknown))}",
                           hint=f"choose among {', '.join((*INFRASTRUCTURE, *COMPONENTS))}", code="up.only.unknown")
    return tuple(c for c in COMPONENTS if c in names)


def print_serve_environment(settings: Settings, eps: Endpoints) -> None:
    """What a ``ccpipe serve`` process needs to reach this infrastructure, as shell assignments."""
    say("For 'ccpipe serve COMPONENT' on this machine:")
    say(f"  export CCPIPE_NATS_URL={eps.nats_url}")
    say(f"  export CCPIPE_NATS_CREDS_DIR={creds_dir(settings)}   # or CCPIPE_NATS_CREDS=<dir>/<component>.creds")
    if eps.registry:
        say(f"  export CCPIPE_REGISTRY={eps.registry} CCPIPE_REGISTRY_USERNAME=ccpipe-push "
            f"CCPIPE_REGISTRY_PASSWORD_FILE={registry_password_file(settings.data_dir, 'push')}")
    if eps.kbs_url:
        say(f"  export CCPIPE_KBS_URL={eps.kbs_url}")
    admin = pinned_admin_public(settings.data_dir)
    if admin is not None:
        say(f"  export CCPIPE_ADMIN_KEY={encode_public(admin)}   # on other hosts: trust what this admin key enrolled")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``up`` command."""
    p = add("up", cmd_up, "run every service of the embedded default in the foreground (Ctrl-C stops)")
    p.add_argument("--production", action="store_true",
                   help="refuse emulated TEE evidence whatever CCPIPE_ALLOW_EMULATED or a workload says")
    p.add_argument("--only", metavar="PARTS",
                   help="run only these, comma-separated: nats,registry (the servers, provisioned; then start "
                        "components with 'ccpipe serve') and any of " + ",".join(COMPONENTS))
    p.add_argument("--cluster", type=int, default=1, choices=(1, *CLUSTER_SIZES), metavar="N",
                   help="run N nats-servers as one JetStream cluster on loopback (3 or 5) instead of one")
