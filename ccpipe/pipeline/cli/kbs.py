"""``ccpipe kbs serve``: the Key Broker Service on its own, on as many processes as cores; ``ccpipe kbs keys``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from ccpipe.pipeline.cli.common import say
from ccpipe.pipeline.nats_auth import creds_for
from ccpipe.pipeline.services import find_endpoints
from ccpipe.pipeline.telemetry.http import instrument_app
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.stages.attest.kbs.admin_auth import ensure_admin_keypair
from ccpipe.stages.attest.kbs.key_dir import KEY_FILES, KEYS_DIR_ENV, create_kbs_keys
from ccpipe.stages.attest.kbs.workers import WorkerConfig, WorkerPool, watch


async def cmd_kbs_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve RCAR (HTTP and NATS) and the admin API until interrupted; exit 1 if a worker dies."""
    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port {args.port} is not a TCP port", code="kbs.port.invalid")
    if args.workers < 1:
        raise InvalidInput(f"--workers {args.workers}: at least one worker is needed", code="kbs.workers.invalid")
    if args.auth_per_minute < 0:
        raise InvalidInput(f"--auth-per-minute {args.auth_per_minute} is negative (0 turns the limit off)",
                           code="kbs.auth_rate.invalid")
    eps = find_endpoints(settings)
    cfg = WorkerConfig(data_dir=settings.data_dir, nats_url=eps.nats_url,
                       host=args.host or settings.listen_host, port=args.port,
                       allow_emulated=settings.allow_emulated,
                       nats_creds=creds_for(settings, Component.KBS),
                       nats_ca=str(settings.nats_ca) if settings.nats_ca else None,
                       inline_appraisal=args.workers > 1 if args.inline_appraisal is None else args.inline_appraisal,
                       auth_per_minute=args.auth_per_minute, instrument=instrument_app)
    pool = WorkerPool(cfg, args.workers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    died: list[int] = []
    with pool as url:
        say(f"KBS serving {url}/kbs/v0 and ccpipe.kbs.* on {eps.nats_url} with {args.workers} worker(s) "
            f"(pids {', '.join(map(str, pool.pids))}); Ctrl-C stops it")
        await watch(pool, stop, died.extend)
    if died:
        raise ConfigurationError(f"a KBS worker exited with status {died[0]}; all workers were stopped",
                                 hint="see the worker's error above; a supervisor should restart 'ccpipe kbs serve'",
                                 code="kbs.workers.died")
    return 0


def cmd_kbs_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Write the KBS replicas' shared keys into a directory, for the deployment's secret store."""
    # the admin public key is this data directory's: the administrator mints admin tokens here
    admin_pem = ensure_admin_keypair(settings.data_dir).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in create_kbs_keys(Path(args.directory), admin_pem):
        say(f"wrote {path}")
    say(f"give every KBS replica a copy (e.g. kubectl create secret generic ccpipe-kbs-keys --from-file="
        f"{args.directory}) and set {KEYS_DIR_ENV} to where it is mounted")
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """``ccpipe kbs serve`` and ``ccpipe kbs keys``."""
    kbs = sub.add_parser("kbs", help="run the Key Broker Service on its own",
                         description="The Key Broker Service (Trustee's RCAR protocol) outside 'ccpipe up'.")
    inner = kbs.add_subparsers(dest="kbs_command", required=True, metavar="KBS_COMMAND")
    p = add("serve", cmd_kbs_serve, "serve RCAR over HTTP and NATS with N worker processes on one port",
            json_flag=False, into=inner)
    p.add_argument("--host", default=None, help="address to listen on (default CCPIPE_LISTEN_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080, Trustee's; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port (default 1; one per core to use them all)")
    p.add_argument("--auth-per-minute", type=int, default=600,
                   help="RCAR handshakes one client address may start per minute, per worker (default 600; 0: no "
                   "limit, e.g. behind a proxy or NAT that gives every guest one address)")
    p.add_argument("--inline-appraisal", action=argparse.BooleanOptionalAction, default=None,
                   help="appraise on each worker's event loop instead of a thread (default: on with >1 worker)")
    p = add("keys", cmd_kbs_keys, f"write the KBS replicas' shared keys ({', '.join(KEY_FILES)}) and this data "
            f"directory's KBS admin public key into DIRECTORY, for a secret store; replicas read them from "
            f"{KEYS_DIR_ENV}", json_flag=False, into=inner)
    p.add_argument("directory", metavar="DIRECTORY", help="where to write them (created; existing keys are refused)")
