"""``ccpipe submit`` and ``ccpipe hook install``: the git trigger."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccpipe.pipeline.quick_submit import quick_submit
from ccpipe.pipeline.trigger import (
    Push,
    install_hook,
    make_submission,
    parse_hook_input,
    resolve_push,
    submission_failure,
)
from ccpipe.schemas.errors import CcpipeError

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from ccpipe.schemas.config import Settings
    from ccpipe.schemas.envelope import Event

Results = list[tuple["Event", CcpipeError | None]]
"""Each push's event (``submitted``, or ``failed`` for a push that cannot start a workload) and its error."""


async def _submit(settings: Settings, pushes: list[Push], as_json: bool, quiet_prefix: str = "") -> int:
    # The full path: what quick_submit declined (see its module). Its modules load only here.
    from ccpipe.pipeline.cli.common import jetstream, print_json, say
    from ccpipe.pipeline.enrolment_bus import configured_admin_key
    from ccpipe.pipeline.signing import event_signer
    from ccpipe.schemas.emitters import Component
    from ccpipe.schemas.events import Submitted

    results: Results = []
    for push in pushes:
        try:
            results.append((make_submission(push), None))
        except CcpipeError as exc:
            results.append((submission_failure(push, exc), exc))
    async with jetstream(settings, "ccpipe-submit", Component.SUBMIT) as js:
        from ccpipe.pipeline.bus import EventPublisher  # after jetstream(): it imports NATS the light way
        from ccpipe.pipeline.telemetry.tracing import root_span

        if configured_admin_key(settings) is not None:
            results = await _with_stored_sources(js, settings.data_dir, pushes, results)
        publisher = EventPublisher(js, signer=event_signer(settings.data_dir))
        for event, _ in results:
            # the root of the workload's trace: every stage's span descends from this publish
            with root_span(f"submit {event.type.value}", {"ccpipe.workload_id": event.workload_id}):
                await publisher.publish(event)
    status = 0
    for event, error in results:
        if as_json:
            print_json({"workload_id": event.workload_id, "type": event.type.value, "event_id": event.id,
                        "error": error.one_line() if error else None})
        elif error is None and isinstance(event.payload, Submitted):
            say(f"{quiet_prefix}submitted workload {event.workload_id} ({event.payload.ref} @ "
                f"{event.payload.new_commit[:12]}); follow it with: ccpipe status {event.workload_id}")
        elif error is not None:
            print(f"{quiet_prefix}error: {error.one_line()} (recorded as failed event of {event.workload_id})",
                  file=sys.stderr)
        if error is not None:
            status = 2  # bad input: the push carried no valid workload
    return status


async def _with_stored_sources(js: JetStreamContext, data_dir: Path, pushes: list[Push], results: Results) -> Results:
    """Where components are enrolled: each pushed commit stored sealed to the build stage, and its
    ``submitted`` event naming that artifact instead of the local repository (a build host has no
    access to it). Every source is stored before any event is published; a commit that cannot be
    packed turns its event into a ``failed`` one. Raises what :func:`store_source` raises otherwise
    (no build sealing key enrolled, NATS not answering)."""
    from ccpipe.pipeline.enrolment_bus import read_records
    from ccpipe.pipeline.source_bundles import SourceBundleError, store_source
    from ccpipe.schemas.events import Submitted

    _, records = await read_records(js)
    out: Results = []
    for push, (event, error) in zip(pushes, results, strict=True):
        if error is None and isinstance(event.payload, Submitted):
            try:
                ref = await store_source(js, data_dir, event.workload_id, push.repo, push.new, records)
            except SourceBundleError as exc:
                out.append((submission_failure(push, exc), exc))
                continue
            event = event.model_copy(update={"payload": event.payload.model_copy(update={"repo": str(ref)})})
        out.append((event, error))
    return out


async def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    """Submit a ref by hand, or (``--hook``) every ref a push updated, read from stdin."""
    if args.hook:
        hook_input = getattr(args, "hook_input", None)  # read already when quick_cmd_submit declined
        pushes = parse_hook_input(Path(args.path), sys.stdin.read() if hook_input is None else hook_input)
        return await _submit(settings, pushes, args.json, quiet_prefix="ccpipe: ")
    return await _submit(settings, [resolve_push(Path(args.path), args.ref)], args.json)


def quick_cmd_submit(args: argparse.Namespace) -> int | None:
    """``ccpipe submit`` without the settings model and the models, when it can (see quick_submit); None declines.

    Runs before the settings are loaded. The hook's stdin is read once and kept in
    ``args.hook_input`` for :func:`cmd_submit`.
    """
    if args.hook:
        args.hook_input = sys.stdin.read()
        return quick_submit(parse_hook_input(Path(args.path), args.hook_input), os.environ, as_json=args.json,
                            quiet_prefix="ccpipe: ")
    try:
        push = resolve_push(Path(args.path), args.ref)
    except CcpipeError:
        return None  # the full path resolves it again and reports the error
    return quick_submit([push], os.environ, as_json=args.json)


def cmd_hook_install(settings: Settings, args: argparse.Namespace) -> int:
    """Install the post-receive hook in a repository."""
    from ccpipe.pipeline.cli.common import print_json, say

    hook = install_hook(Path(args.path), settings.data_dir, force=args.force)
    if args.json:
        print_json({"hook": str(hook)})
    else:
        say(f"installed {hook}: pushes to this repository now start ccpipe workloads")
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The git trigger's commands: submit, hook install."""
    p = add("submit", cmd_submit, "submit a commit of a git repository (what the hook does)")
    p.add_argument("path", help="git repository")
    p.add_argument("--ref", help="ref or commit (default HEAD)")
    p.add_argument("--hook", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(quick=quick_cmd_submit)
    hook = sub.add_parser("hook", help="manage the git hook").add_subparsers(dest="hook_cmd", required=True)
    p = add("install", cmd_hook_install, "install the post-receive hook in a repository", into=hook)
    p.add_argument("path", help="git repository (bare or not) that receives pushes")
    p.add_argument("--force", action="store_true", help="replace a hook ccpipe did not write")
