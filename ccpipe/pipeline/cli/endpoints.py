"""``ccpipe endpoints``: the URLs of the services a running ``ccpipe up`` publishes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ccpipe.pipeline.cli.common import print_json, say
from ccpipe.pipeline.services import Endpoints, find_endpoints
from ccpipe.schemas.config import Settings


def print_endpoints(eps: Endpoints) -> None:
    """One line per service, for people (``up``, ``demo`` and ``endpoints`` print the same block)."""
    if len(eps.nats_nodes) > 1:
        say(f"  NATS       a cluster of {len(eps.nats_nodes)} nodes: {eps.nats_url}"
            + (f"  (monitoring {eps.nats_monitor_url})" if eps.nats_monitor_url else ""))
    else:
        say(f"  NATS       {eps.nats_url}" + (f"  (monitoring {eps.nats_monitor_url})" if eps.nats_monitor_url else ""))
    say(f"  registry   {eps.registry or '-'}")
    if eps.kbs_url:
        say(f"  KBS        {eps.kbs_url}")
    if eps.audit_api_url:
        say(f"  audit      {eps.audit_api_url}")


def cmd_endpoints(settings: Settings, args: argparse.Namespace) -> int:
    """Print the URLs of what is running."""
    eps = find_endpoints(settings)
    if args.json:
        print_json(eps.model_dump(mode="json"))
    else:
        print_endpoints(eps)
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``endpoints`` command."""
    add("endpoints", cmd_endpoints, "print the URLs of the running services")
