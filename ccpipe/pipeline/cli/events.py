"""``ccpipe events`` and ``ccpipe status``: the trail as people and scripts read it.

Every event is checked as the consumers check it (:mod:`ccpipe.pipeline.event_trust`): one that is
not validly signed by a component allowed to emit its type, or is stored under another subject,
is shown with its flag (``!unsigned``, ``!not-emitter`` …; ``"flag"`` in JSON), and so is a second
copy of an event already listed (``!replay``). ``status`` judges a workload's state by the
events that carry no flag: nothing acted on the others. With no service running, both read the
local audit log instead and say so on stderr (:mod:`ccpipe.pipeline.cli.local_trail`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ccpipe.pipeline.cli.common import print_json, say
from ccpipe.pipeline.cli.local_trail import read_trail
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.event_trust import SignatureVerdict, trusted_keys
from ccpipe.pipeline.reader import StoredEvent, iter_events
from ccpipe.schemas import events as ev
from ccpipe.schemas.cloudevents import CloudEvent
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, check_workload_id
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType


def describe(event: Event) -> str:
    """A short human summary of an event's payload."""
    match event.payload:
        case ev.Submitted() as p:
            return f"{p.ref} @ {p.new_commit[:12]} by {p.pusher}"
        case ev.Failed() as p:
            return f"{p.reason.stage}: {p.reason.message}" + (f" — {p.reason.hint}" if p.reason.hint else "")
        case ev.Built() | ev.Signed() | ev.Pushed() as p:
            return str(p.image_digest)
        case ev.Scheduled() | ev.EnclaveLaunched() as p:
            return f"node {p.node_id} ({p.tee.value}, {p.backend})"
        case ev.AttestationChallenged() as p:
            return f"challenge to {p.node_id or '?'} ({p.tee.value}), session {p.session_id[:12]}"
        case ev.AttestationVerified() as p:
            return f"{p.tee.value}/{p.backend} {p.ear_status}" + (" (emulated)" if p.emulated else "")
        case ev.AttestationRejected() | ev.KeyDenied() as p:
            return f"{p.reason.code}: {p.reason.message}"
        case ev.KbsAdminChanged() as p:
            return f"{p.action} {p.target} by {p.admin or '?'} ({p.role})"
        case ev.KeyReleased() as p:
            return f"{p.resource} to {p.node_id or '?'}" + (
                f" (claimed {p.claimed_node_id}, unproven)" if p.claimed_node_id else "")
        case ev.KbsRequestsRefused() as p:
            return f"{p.count} {p.kind} request(s) from {p.client} refused ({p.interval_s:.0f} s)"
        case ev.ImageVerified() as p:
            return f"{p.reference} signed by {p.signer_key_resource} ({p.signer_key_digest[:19]}…)"
        case ev.ImageUnpacked() as p:
            return f"{p.layers} layer(s), {p.entries} entries, {p.bytes_written} bytes → {p.plain_image_digest[:19]}…"
        case ev.SchedulingPending() as p:
            return f"waiting: {p.reason}"
        case ev.WorkloadRunning(limits=ev.SandboxLimits() as held):
            return f"limits: pids {held.pids.value}, memory {held.memory.value}"
        case ev.WorkloadExited() as p:
            return f"exit {p.exit_code} after {p.duration_s:.2f} s"
        case _:
            return ""


REPLAY_FLAG = "replay"
"""The flag of an event id listed before (a copy stored again)."""


class Flagger:
    """Says what is wrong with each listed event, if anything (``None`` when nothing is)."""

    def __init__(self, settings: Settings) -> None:
        self.keys = trusted_keys(settings.data_dir)
        self.seen: set[str] = set()

    def flag(self, stored: StoredEvent) -> str | None:
        """The flag of one event, in listing order (a repeated id is a replay)."""
        if stored.event is None:
            return None  # shown as unreadable already
        check = self.keys.check(stored.data, stored.headers.get(SIGNATURE_HEADER), subject=stored.subject or None)
        if check.verdict is not SignatureVerdict.VALID:
            return check.verdict.value
        if stored.event.id in self.seen:
            return REPLAY_FLAG
        self.seen.add(stored.event.id)
        return None


def line_for(stored: StoredEvent, flag: str | None = None) -> str:
    """One table row for an event (a flag, if any, leads its summary)."""
    e = stored.event
    if e is None:
        return f"{stored.seq:>6}  (unreadable event: {stored.error})"
    when = e.occurred_at.strftime("%H:%M:%S.%f")[:-3]
    summary = f"!{flag.upper()} {describe(e)}" if flag else describe(e)
    return f"{stored.seq:>6}  {when}  {e.workload_id:<24} {e.type.value:<22} {summary}"


class UnreadableLine(BaseModel):
    """A ``ccpipe events --json`` line for a stored message that is no event."""

    model_config = ConfigDict(extra="forbid", title="unreadable message")

    seq: int = Field(description="Stream sequence of the message.")
    error: str = Field(description="Why it is no event.")
    raw: str = Field(description="The message as text (undecodable bytes replaced).")


class EventsLine(RootModel[CloudEvent | UnreadableLine]):
    """One line of ``ccpipe events --json``: the CloudEvent with its ``seq`` (and ``flag``) extension, or
    an unreadable message."""


def as_json(stored: StoredEvent, flag: str | None = None) -> dict[str, object]:
    """An event as scripts see it: the CloudEvent plus its stream sequence (and ``flag``, if any), both as
    extension attributes (:class:`EventsLine`)."""
    if stored.event is None:
        return {"seq": stored.seq, "error": stored.error, "raw": stored.data.decode(errors="replace")}
    return {"seq": stored.seq, **json.loads(stored.data), **({"flag": flag} if flag else {})}


async def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    """Print events (optionally of one workload), and with --follow keep printing new ones."""
    if args.workload:
        check_workload_id(args.workload)  # before connecting: a bad id is bad input whatever runs
    flagger = Flagger(settings)
    note = "; --follow needs the running services, so it stops here" if args.follow else ""
    async for stored in read_trail(settings, "ccpipe-events", args.workload, "events",
                                   lambda js: iter_events(js, args.workload, follow=args.follow), note=note):
        flag = flagger.flag(stored)
        if args.json:
            print(json.dumps(as_json(stored, flag)), flush=True)
        else:
            say(line_for(stored, flag))
    return 0


async def stored_events(settings: Settings, name: str, workload_id: str, command: str) -> list[StoredEvent]:
    """Every stored event of one workload, from the stream, or from the local audit log when no
    service runs (:func:`~ccpipe.pipeline.cli.local_trail.read_trail`)."""
    return [s async for s in read_trail(settings, name, workload_id, command, lambda js: iter_events(js, workload_id))]


def workload_state(events: list[Event]) -> str:
    """The workload's state from its latest event."""
    if not events:
        return "unknown"
    if any(e.type == EventType.FAILED for e in events):
        return "failed"
    return events[-1].type.value


def judge(stored: list[StoredEvent], flagger: Flagger) -> tuple[str, list[str | None]]:
    """A workload's state from its unflagged events, and each event's flag."""
    flags = [flagger.flag(s) for s in stored]
    return workload_state([s.event for s, flag in zip(stored, flags, strict=True) if s.event and flag is None]), flags


REFUSED_STATES = frozenset({"failed", EventType.KEY_DENIED.value, EventType.ATTESTATION_REJECTED.value})
"""States that mean the workload did not get what it needed (exit 1): a failure, or a last word of the
KBS refusing its evidence or its key, after which nothing runs it."""


def status_exit_code(state: str) -> int:
    """``ccpipe status``'s exit code for a workload in ``state``: 1 when it failed or was refused."""
    return 1 if state in REFUSED_STATES else 0


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Show one workload's journey and state; exit 1 if it failed or its evidence or key was refused, 2 if unknown."""
    check_workload_id(args.workload)
    stored = await stored_events(settings, "ccpipe-status", args.workload, "status")
    state, flags = judge(stored, Flagger(settings))
    if not any(s.event for s in stored):
        raise InvalidInput(
            f"no events for workload {args.workload!r}",
            hint="check the id with 'ccpipe events' (ids look like hello-0123456789)",
            code="status.unknown_workload",
        )
    if args.json:
        print_json({"workload_id": args.workload, "state": state,
                    "events": [as_json(s, flag) for s, flag in zip(stored, flags, strict=True)]})
    else:
        say(f"workload {args.workload}: {state}")
        for s, flag in zip(stored, flags, strict=True):
            say(line_for(s, flag))
    return status_exit_code(state)


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Reading the trail: events, status."""
    p = add("events", cmd_events, "print events (--follow to keep printing)")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events")
    p.add_argument("--workload", help="only this workload")
    p = add("status", cmd_status, "a workload's journey and state")
    p.add_argument("workload", help="workload id")
