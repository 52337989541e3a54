"""``ccpipe nodes``, ``ccpipe k8s manifest`` and ``ccpipe k8s deploy-manifests``: the node inventory and
Kubernetes output, for a workload and for ccpipe itself. ``k8s manifest`` reads the workload's events
from the local audit log when no service runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccpipe.pipeline.cli.cluster_manifests import DeployValues, deploy_manifests, load_values, render
from ccpipe.pipeline.cli.common import jetstream, print_json, say
from ccpipe.pipeline.cli.events import stored_events
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.services import find_endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.deploy.inventory import NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import list_nodes
from ccpipe.stages.deploy.k8s import KINDS
from ccpipe.stages.deploy.k8s_trail import DEFAULT_IMAGE_POLICY, manifest_from_events


def node_line(node: NodeAnnouncement, now: datetime) -> str:
    """One table row for a node."""
    age = f"{(now - node.heartbeat_at).total_seconds():.1f}s" if node.heartbeat_at else "?"
    tcb = ",".join(f"{k}={v}" for k, v in sorted(node.tcb.items())) or "-"
    labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-"
    kind = f"{node.tee.value}{'*' if node.emulated else ''}"
    free = f"{node.capacity.free}/{node.capacity.total}"
    return f"{node.node_id:<28} {kind:<7} {node.backend:<13} {free:>7}  {age:>6}  {tcb:<24} {labels}"


async def cmd_nodes(settings: Settings, args: argparse.Namespace) -> int:
    """List the live enclave runner nodes (those heartbeating in the CCPIPE_NODES bucket)."""
    async with jetstream(settings, "ccpipe-nodes") as js:
        nodes = await list_nodes(js)
    if args.json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return 0
    if not nodes:
        say("no nodes are announced (start one with 'ccpipe runner' or 'ccpipe up')")
        return 0
    say(f"{'NODE':<28} {'TEE':<7} {'BACKEND':<13} {'FREE':>7}  {'SEEN':>6}  {'TCB':<24} LABELS")
    now = datetime.now(UTC)
    for node in nodes:
        say(node_line(node, now))
    say("(* = emulated TEE: development only)")
    return 0


def _running_kbs_url(settings: Settings) -> str | None:
    # With no service running the manifest is still made from the audit log, given --kbs-url.
    try:
        return find_endpoints(settings).kbs_url
    except ConfigurationError:
        return None


async def cmd_k8s_manifest(settings: Settings, args: argparse.Namespace) -> int:
    """Print a Pod or Deployment (JSON, which kubectl applies) for a pushed workload."""
    kbs_url = args.kbs_url or settings.kbs_url or _running_kbs_url(settings)
    if not kbs_url:
        raise ConfigurationError(
            "no KBS URL is known for the initdata",
            hint="pass --kbs-url URL (the KBS as the cluster's guests reach it) or set CCPIPE_KBS_URL",
            code="deploy.k8s.kbs_url",
        )
    stored = await stored_events(settings, "ccpipe-k8s", args.workload, "k8s manifest")
    trust = input_trust(settings.data_dir)  # a forged `signed` must not choose the initdata
    events = [e for s in stored if s.event is not None and (e := s.trusted_by(trust))]
    result = manifest_from_events(
        args.workload, events, kbs_url=kbs_url, kind=args.kind, replicas=args.replicas,
        image_policy=args.image_policy, registry=args.registry,
        tee=TeeType(args.tee) if args.tee else None, emulated=True if args.emulated else None,
        namespace=args.namespace,
        registered_initdata=not (args.kbs_url or args.registry or args.image_policy != DEFAULT_IMAGE_POLICY),
    )
    for warning in result.warnings:
        print(f"ccpipe k8s manifest: warning: {warning}", file=sys.stderr)
    sys.stdout.write(json.dumps(result.manifest, indent=2) + "\n")
    return 0


def cmd_k8s_deploy_manifests(settings: Settings, args: argparse.Namespace) -> int:
    """Print the Kubernetes objects that run ccpipe's components, from the defaults and ``--values``."""
    if args.print_values:
        sys.stdout.write(DeployValues().model_dump_json(indent=2) + "\n")
        return 0
    overrides: Any = {}
    if args.values:
        try:
            overrides = json.loads(args.values.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"the values file {args.values} cannot be read as JSON: {exc}",
                               code="deploy.k8s.values") from exc
    if not isinstance(overrides, dict):
        raise InvalidInput(f"the values file {args.values} is not a JSON object", code="deploy.k8s.values")
    try:
        values = load_values(overrides)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise InvalidInput(f"the values file {args.values} is not valid: {exc}", code="deploy.k8s.values") from exc
    sys.stdout.write(render(deploy_manifests(values)))
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Deploy commands: nodes, k8s manifest, k8s deploy-manifests."""
    add("nodes", cmd_nodes, "list the enclave runner nodes that are heartbeating")
    k8s = sub.add_parser("k8s", help="Kubernetes output", description="Kubernetes output")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")
    p = add("manifest", cmd_k8s_manifest, "print a CoCo Pod/Deployment for a pushed workload (JSON)",
            json_flag=False, into=k8s_sub)
    p.add_argument("workload", help="workload id")
    p.add_argument("--kind", choices=KINDS, default="Pod", help="Pod (default) or Deployment")
    p.add_argument("--replicas", type=int, default=1, help="Deployment replicas (spread over hosts)")
    p.add_argument("--kbs-url", help="KBS URL as the guests reach it (default: CCPIPE_KBS_URL / the running KBS)")
    p.add_argument("--image-policy", default=DEFAULT_IMAGE_POLICY,
                   help=f"containers-policy.json location for the guest (default {DEFAULT_IMAGE_POLICY})")
    p.add_argument("--registry", help="registry host[:port] as the cluster reaches it (default: where it was pushed)")
    p.add_argument("--tee", choices=[t.value for t in TeeType], help="override the TEE (default: the scheduled one)")
    p.add_argument("--emulated", action="store_true", help="use the development runtime (kata-qemu-coco-dev)")
    p.add_argument("--namespace", help="metadata.namespace of the object (default: none, kubectl's current)")
    p = add("deploy-manifests", cmd_k8s_deploy_manifests,
            "print the Kubernetes objects that run ccpipe's own components (YAML; see deploy/README.md)",
            json_flag=False, into=k8s_sub)
    p.add_argument("--values", type=Path, help="JSON file of values merged over the defaults")
    p.add_argument("--print-values", action="store_true", help="print the default values (JSON) and exit")
