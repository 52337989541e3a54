"""``ccpipe admin``: the installation's admin key and the enrolment of component keys.

The steps for two machines are in ``docs/design/enrolment.md``: ``admin init`` once on the
administrator's machine, ``admin public-key COMPONENT`` where a component runs, ``admin enrol
COMPONENT KEY`` back on the administrator's machine, then ``ccpipe serve COMPONENT`` with
``CCPIPE_ADMIN_KEY`` set.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ccpipe.enclave_runner.tee import ensure_emulated_roots, hardware_backend
from ccpipe.evidence.enrolled_roots import export_public_roots
from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.cli.common import jetstream, print_json, say
from ccpipe.pipeline.enrolment import (
    ROOTS_FROM,
    admin_key_path,
    encode_public,
    init_admin,
    load_admin_key,
)
from ccpipe.pipeline.enrolment_bus import (
    enrol,
    enrolment_token,
    list_enrolments,
    parse_enrolment_token,
    require_admin_key,
    revoke,
)
from ccpipe.pipeline.event_signature import check_component, load_or_create_component_key
from ccpipe.pipeline.nats_auth import ADMIN
from ccpipe.pipeline.services import find_endpoints
from ccpipe.schemas.config import Settings


async def cmd_admin_init(settings: Settings, args: argparse.Namespace) -> int:
    """Make the installation's admin key (once; an existing one is kept) and provision the bus as admin."""
    if admin_key_path(settings.data_dir).exists():
        public = load_admin_key(settings.data_dir).public_key().public_bytes_raw()
        made = False
    else:
        public, made = init_admin(settings.data_dir), True
    provisioned = False
    if not args.offline:
        await provision_as_admin(settings, find_endpoints(settings).nats_url, enrol_local=False)
        provisioned = True
    if args.json:
        print_json({"admin_key": encode_public(public), "created": made, "provisioned": provisioned})
        return 0
    say(("made" if made else "kept") + f" the admin key {admin_key_path(settings.data_dir)} (keep it on this machine)")
    if provisioned:
        say("provisioned the stream and buckets on NATS")
    say("on every host that runs a component, set:")
    print(f"CCPIPE_ADMIN_KEY={encode_public(public)}")
    return 0


def emulated_roots_to_enrol(settings: Settings, component: str) -> dict[str, str] | None:
    """This host's public emulated roots, for a build runner or runner node that will emulate its TEE
    (no TEE hardware here and emulation allowed); made on first use. None otherwise."""
    if component not in ROOTS_FROM or hardware_backend() is not None or not settings.allow_emulated:
        return None
    ensure_emulated_roots(settings.data_dir)
    return export_public_roots(settings.data_dir) or None


def cmd_admin_public_key(settings: Settings, args: argparse.Namespace) -> int:
    """Print this host's public key of COMPONENT (made on first use), for the admin to enrol: its
    event key, for the sign stage ``,`` and its sealing key, and for an emulating build runner or
    runner node ``,roots=`` and its public emulated roots."""
    check_component(args.component)
    token = enrolment_token(settings.data_dir, args.component, emulated_roots_to_enrol(settings, args.component))
    if args.json:
        key = load_or_create_component_key(settings.data_dir, args.component)
        print_json({"component": args.component, "key_id": key.key_id, "public_key": token})
    else:
        print(token)
    return 0


async def cmd_admin_enrol(settings: Settings, args: argparse.Namespace) -> int:
    """Sign and store the enrolment of PUBLIC_KEY for COMPONENT."""
    token = parse_enrolment_token(args.public_key, args.component)
    async with jetstream(settings, "ccpipe-admin", ADMIN) as js:
        record = await enrol(js, settings.data_dir, args.component, token.public_key, token.sealing_key,
                             token.emulated_roots)
    if args.json:
        print_json(record.to_json())
    else:
        roots = " with its emulated TEE roots" if record.emulated_roots else ""
        say(f"enrolled {record.component} key {record.key_id}{roots}")
    return 0


async def cmd_admin_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke an enrolled key from now on: events it signs after this are refused and flagged."""
    async with jetstream(settings, "ccpipe-admin", ADMIN) as js:
        record = await revoke(js, settings.data_dir, args.component, args.key_id)
    if args.json:
        print_json(record.to_json())
    else:
        say(f"revoked {record.component} key {record.key_id} from {record.revoked_at}")
    return 0


async def cmd_admin_enrolments(settings: Settings, args: argparse.Namespace) -> int:
    """List the enrolled keys the pinned admin key signed (and the records it ignores, with why)."""
    admin_public = require_admin_key(settings)
    async with jetstream(settings, "ccpipe-admin", ADMIN) as js:
        records, ignored = await list_enrolments(js, admin_public)
    if args.json:
        print_json({"enrolments": [r.to_json() for r in records], "ignored": ignored})
        return 1 if ignored else 0
    for r in records:
        state = f"revoked {r.revoked_at.isoformat()}" if r.revoked_at else "in force"
        print(f"{r.component:<10} {r.key_id}  enrolled {r.enrolled_at.isoformat()}  {state}")
    for why in ignored:
        print(f"IGNORED: {why}")
    return 1 if ignored else 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """``ccpipe admin init|public-key|enrol|revoke|enrolments``."""
    admin = sub.add_parser("admin", help="the installation's admin key and the enrolment of component keys",
                           description="Trust without a shared disk: the admin key vouches for each component's "
                           "event-signing key (docs/design/enrolment.md).")
    inner = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    p = add("init", cmd_admin_init, "make the admin key (once) and provision the stream and buckets", into=inner)
    p.add_argument("--offline", action="store_true", help="only make the key; do not provision NATS")
    p = add("public-key", cmd_admin_public_key, "print this host's public key of COMPONENT, to enrol it", into=inner)
    p.add_argument("component", help="the component (build, attest, sign, push, schedule, kbs, runner, submit)")
    p = add("enrol", cmd_admin_enrol, "enrol PUBLIC_KEY as COMPONENT's event-signing key", into=inner)
    p.add_argument("component")
    p.add_argument("public_key", help="the whole line 'ccpipe admin public-key' printed: KEY (base64), for sign "
                   "KEY,SEALING_KEY, for an emulating build or runner host also ,roots=…")
    p = add("revoke", cmd_admin_revoke, "revoke an enrolled key from now on", into=inner)
    p.add_argument("component")
    p.add_argument("key_id", help="as 'ccpipe admin enrolments' lists it")
    add("enrolments", cmd_admin_enrolments, "list the enrolled keys", into=inner)
