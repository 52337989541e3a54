"""``ccpipe audit {serve,query,verify,prove,reverify,export}``: the audit trail from the command line.

``query``, ``prove`` and ``export`` read the audit database (``CCPIPE_AUDIT_DB`` or the
embedded SQLite file); ``verify`` also replays ``CCPIPE_EVENTS``, and says so (exit 1)
when the services are not running, unless ``--store-only``; ``reverify`` re-runs the
attestation service's verification on the evidence an attestation event recorded; ``serve``
runs the live log in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import signal
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccpipe.pipeline.audit.enrolcheck import EnrolmentCheck, rebuild_from_enrolments
from ccpipe.pipeline.audit.export import export_workload
from ccpipe.pipeline.audit.ingest import StreamMessage
from ccpipe.pipeline.audit.liveness import StoreMismatch
from ccpipe.pipeline.audit.logkey import load_keyring
from ccpipe.pipeline.audit.prove import EventNotLogged, latest_checkpoint, prove_event
from ccpipe.pipeline.audit.query import EventFilter, IndexedEvent
from ccpipe.pipeline.audit.service import published_checkpoints, running_audit_log
from ccpipe.pipeline.audit.store.open import open_audit_store, open_index
from ccpipe.pipeline.audit.streamcheck import verify_stream
from ccpipe.pipeline.audit.verify import IndexReport, LogReport, TailReport, verify_index, verify_log, verify_tail
from ccpipe.pipeline.cli.common import jetstream, print_json, say
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.reader import iter_events
from ccpipe.pipeline.services import find_endpoints
from ccpipe.pipeline.telemetry.http import serve_observability
from ccpipe.schemas.cloudevents import envelope_view
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is not an ISO 8601 time", hint="write e.g. 2026-11-22T15:00:00Z") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def event_json(e: IndexedEvent) -> dict[str, Any]:
    """An indexed event as ``--json`` prints it (``raw`` is the logged event itself)."""
    return {"seq": e.seq, "leaf_index": e.leaf_index, "event_id": e.event_id, "type": e.type,
            "workload_id": e.workload_id, "occurred_at": e.occurred_at.isoformat(), "component": e.component,
            "signature": e.signature, "summary": e.summary, "fields": e.fields,
            "event": json.loads(e.raw) if e.type != "invalid" else e.raw.decode(errors="replace")}


def table(events: list[IndexedEvent]) -> list[str]:
    """Rows of the readable table; a signature that is not valid is shown in capitals."""
    out = [f"{'SEQ':>7}  {'OCCURRED (UTC)':<23} {'WORKLOAD':<20} {'TYPE':<21} {'SIGNATURE':<13} SUMMARY"]
    for e in events:
        sig = e.signature if e.signature == "valid" else e.signature.upper()
        when = e.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        out.append(f"{e.seq:>7}  {when:<23} {e.workload_id[:20]:<20} {e.type:<21} {sig:<13} {e.summary}")
    return out


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    """List logged events matching the filters; exit 1 when none match."""
    index = open_index(settings)
    try:
        if args.who_got:
            found = index.key_recipients(args.who_got)
        elif args.ran:
            found = index.runs_of_image(args.ran)
        else:
            found = index.query(EventFilter(
                workload_id=args.workload, commit=args.commit, image_digest=args.image, key_resource=args.key,
                node_id=args.node, tee=args.tee, backend=args.backend, event_type=args.type, verdict=args.verdict,
                since=_when(args.since) if args.since else None, until=_when(args.until) if args.until else None,
                limit=args.limit, after_seq=args.after))
    finally:
        index.close()
    if args.json:
        print_json([event_json(e) for e in found])
    else:
        for line in table(found):
            say(line)
        if not found:
            say("(no logged event matches)")
    return 0 if found else 1


def _report_json(name: str, r: LogReport) -> dict[str, Any]:
    return {"source": name, "ok": r.ok, "tree_size": r.checkpoint.size if r.checkpoint else None,
            "leaves_checked": r.leaves_checked,
            "finding": None if r.finding is None else {"index": r.finding.index, "damage": r.finding.damage.value,
                                                       "detail": r.finding.detail},
            "flags": [{"index": f.index, "event_id": f.event_id, "verdict": f.check.verdict.value,
                       "key_id": f.check.key_id, "signer": f.check.signer, "claimed": f.check.claimed}
                      for f in r.flags]}


async def _stream(settings: Settings) -> tuple[list[StreamMessage], list[bytes]]:
    async with jetstream(settings, "ccpipe-audit-verify") as js:
        msgs = [StreamMessage(s.seq, s.data, s.headers.get(SIGNATURE_HEADER)) async for s in iter_events(js)]
        published = await published_checkpoints(js)
    return msgs, published


def _stream_or_why(settings: Settings, source: str) -> tuple[list[StreamMessage] | None, list[bytes], str | None]:
    """The stream's messages and published checkpoints, or None and why they could not be read."""
    if source == "store":
        return None, [], None
    try:
        msgs, published = asyncio.run(_stream(settings))
    except (ConfigurationError, TransientError) as exc:
        if source == "stream":
            raise
        return None, [], f"{exc.message}{f' ({exc.hint})' if exc.hint else ''}"
    return msgs, published, None


def _tail_json(t: TailReport) -> dict[str, Any]:
    return {"first": t.first, "size": t.size, "checked_against_stream": t.against_stream,
            "finding": None if t.finding is None else {"index": t.finding.index, "damage": t.finding.damage.value,
                                                       "detail": t.finding.detail}}


def _index_json(r: IndexReport) -> dict[str, Any]:
    return {"ok": r.ok, "rows_checked": r.rows_checked, "unlisted": r.unlisted,
            "differences": [{"table": d.table, "where": d.where, "column": d.column, "stored": d.stored,
                             "expected": d.expected} for d in r.differences]}


def _say_tail(t: TailReport, unreachable: str | None) -> None:
    if t.finding is not None:
        say(f"tail: DAMAGED at leaf {t.finding.index}: {t.finding.damage.value} — {t.finding.detail}")
    elif not t.leaves:
        say("tail: none — the latest signed checkpoint covers every stored leaf")
    elif t.against_stream:
        say(f"tail: ok — the {t.leaves} leaves after the checkpoint of size {t.first} are the stream's messages")
    else:
        why = f"the stream is unreachable: {unreachable}" if unreachable else "--store-only"
        say(f"tail: NOT CHECKED — {t.leaves} leaves after the checkpoint of size {t.first} were not compared "
            f"with the stream ({why})")


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute the tree from the audit store and from the stream; check every checkpoint and
    signature, the leaves after the last checkpoint against the stream, and the query index
    against a rebuild from the leaves; exit 1 naming the damage, any event whose signature is
    not valid, or what could not be checked (the stream unreachable) unless ``--store-only``."""
    source = "store" if args.store_only else args.source
    keyring = load_keyring(settings.data_dir)
    enrolments = rebuild_from_enrolments(settings.data_dir, keyring)
    store = open_audit_store(settings)
    tail: TailReport | None = None
    index: IndexReport | None = None
    try:
        msgs, published, unreachable = _stream_or_why(settings, source)
        notes = [c.note for c in store.checkpoints()] + published
        reports: list[tuple[str, LogReport]] = []
        if source in ("store", "both"):
            latest = latest_checkpoint(store, keyring, published)
            reports.append(("store", verify_log(store, latest.note, keyring)))
            tail = verify_tail(store, latest.size, None if msgs is None else {m.seq: m for m in msgs})
            if reports[0][1].ok:  # an index rebuilt from damaged leaves would only repeat the damage
                index = verify_index(store, keyring)
        if msgs is not None:
            reports.append(("stream", verify_stream(msgs, notes, keyring, store)))
    finally:
        store.close()
    unchecked = unreachable is not None and tail is not None and tail.leaves > 0
    failed = (any(not r.ok for _, r in reports) or (not args.ignore_flags and any(r.flags for _, r in reports))
              or (tail is not None and tail.finding is not None) or (index is not None and not index.ok)
              or unreachable is not None or not enrolments.ok)
    if args.json:
        print_json({"ok": not failed, "enrolments": asdict(enrolments),
                    "reports": [_report_json(n, r) for n, r in reports],
                    "tail": None if tail is None else _tail_json(tail),
                    "index": None if index is None else _index_json(index), "stream_unreachable": unreachable})
        return 1 if failed else 0
    _say_enrolments(enrolments)
    for name, r in reports:
        size = r.checkpoint.size if r.checkpoint else 0
        if r.finding is None:
            say(f"{name}: ok — {r.leaves_checked} leaves match the signed checkpoint of size {size}")
        else:
            where = f"leaf {r.finding.index}" if r.finding.index is not None else "the checkpoint"
            say(f"{name}: DAMAGED at {where}: {r.finding.damage.value} — {r.finding.detail}")
    if unreachable is not None:
        say(f"stream: NOT CHECKED — {unreachable}; "
            f"{'the leaves after the last checkpoint are unchecked; ' if unchecked else ''}"
            "run 'ccpipe audit verify --store-only' to check the store alone")
    if tail is not None:
        _say_tail(tail, unreachable)
    if index is not None:
        _say_index(index)
    elif tail is not None:
        say("index: NOT CHECKED — the leaves it is rebuilt from are damaged")
    flags = {(f.index, f.check.verdict.value, f.check.claimed) for _, r in reports for f in r.flags}
    for at, verdict, claimed in sorted(flags, key=lambda f: f[0]):
        say(f"signature: leaf {at} (claims {claimed or '?'}) is {verdict.upper()}")
    if not flags:
        say("signatures: every logged event is validly signed by the component it names")
    return 1 if failed else 0


def _say_enrolments(e: EnrolmentCheck) -> None:
    if not e.checked:
        say(f"enrolments: NOT CHECKED — {e.why_not}; event signatures are checked against the keyring file as it is")
    elif e.ok:
        say(f"enrolments: ok — signatures are checked against the {e.keys} component keys the admin key enrolled")
    else:
        say(f"enrolments: {len(e.ignored)} records are NOT signed by the pinned admin key and count for nothing:")
        for why in e.ignored:
            say(f"  enrolments: {why}")


def _say_index(r: IndexReport) -> None:
    if r.ok:
        say(f"index: ok — its {r.rows_checked} event rows and their search terms are the rebuild from the leaves")
        return
    say(f"index: DIFFERS from the rebuild from the leaves ({len(r.differences) + r.unlisted} differences):")
    for d in r.differences:
        say(f"  index: {d}")
    if r.unlisted:
        say(f"  … and at least {r.unlisted} more")


def cmd_prove(settings: Settings, args: argparse.Namespace) -> int:
    """Print the inclusion proof of one event against the latest signed checkpoint."""
    keyring = load_keyring(settings.data_dir)
    store = open_audit_store(settings)
    try:
        doc = prove_event(store, keyring, args.event_id)
    finally:
        store.close()
    if args.json:
        print_json(doc)
    else:
        say(f"event {doc['event_id']} is leaf {doc['leaf_index']} of a tree of {doc['tree_size']} leaves")
        say(f"inclusion path: {len(doc['inclusion_path'])} hashes; log key: {doc['log_public_key']}")
        say("checkpoint:")
        for line in str(doc["checkpoint"]).splitlines():
            say(f"  {line}")
        say("(--json prints the document a third party checks with verify.py / ccpipe.pipeline.audit.offline)")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write a self-contained, offline-verifiable evidence bundle of one workload."""
    keyring = load_keyring(settings.data_dir)
    store = open_audit_store(settings)
    try:
        manifest = export_workload(store, store, keyring, args.workload, Path(args.out))
    finally:
        store.close()
    events = manifest["events"]
    assert isinstance(events, list)
    if args.json:
        print_json(manifest)
    else:
        say(f"wrote {len(events)} events of {args.workload} with proofs to {args.out}; "
            f"check with: python3 {Path(args.out) / 'verify.py'} {args.out}")
    return 0


def _recorded_devices(event: IndexedEvent, payload: dict[str, Any]) -> tuple[dict[str, bytes], bytes | None]:
    """The devices' evidence an attestation event kept, and the report_data they carried.

    Raises :class:`InvalidInput` when the recorded additional evidence does not parse.
    """
    from ccpipe.stages.attest.kbs.core import device_evidence
    from ccpipe.stages.attest.kbs.errors import MalformedBody

    try:
        devices = device_evidence(str(payload.get("additional_evidence") or ""))
    except MalformedBody as exc:
        raise InvalidInput(f"event {event.event_id}: recorded additional evidence: {exc.message}") from exc
    # Every device carried the same binding; the shortest recorded claim is it unpadded.
    recorded = ((payload.get("claims") or {}).get("devices") or {}).values()
    bound = sorted((str(d.get("report_data", "")) for d in recorded if isinstance(d, dict)), key=len)
    return devices, (bytes.fromhex(bound[0][:128]) if devices and bound and bound[0] else None)


def reverify_event(settings: Settings, event: IndexedEvent, allow_emulated: bool) -> dict[str, Any]:
    """Re-run the attestation service's verification on the evidence ``event`` recorded.

    Raises :class:`InvalidInput` when the event is not an attestation event or kept no evidence.
    """
    from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService  # the CLI may import ccpipe.stages

    if event.type not in ("attestation.verified", "attestation.rejected"):
        raise InvalidInput(f"event {event.event_id} is a {event.type} event, not an attestation event",
                           hint="pick an attestation.verified or attestation.rejected event (ccpipe audit query "
                                "--type attestation.verified)")
    payload = envelope_view(json.loads(event.raw))["payload"]  # as recorded, in either wire form
    if not payload.get("evidence") or not payload.get("tee"):
        raise InvalidInput(f"event {event.event_id} recorded no evidence to re-verify")
    evidence = base64.b64decode(payload["evidence"])
    digest_ok = payload.get("evidence_digest") in (None, "sha256:" + hashlib.sha256(evidence).hexdigest())
    claims = payload.get("claims") or {}
    devices, device_rd = _recorded_devices(event, payload)
    service = AttestationService.for_data_dir(settings.data_dir, allow_emulated=allow_emulated)
    result = service.appraise(AppraisalRequest(
        tee=payload["tee"], evidence=evidence,
        expected_report_data=bytes.fromhex(str(claims.get("report_data", ""))[:128]),
        workload_id=event.workload_id or None, backend=payload.get("backend"),
        devices=devices, expected_device_report_data=device_rd))
    recorded_ok = event.type == "attestation.verified"
    same = digest_ok and result.ok == recorded_ok and (
        not recorded_ok or result.ear_status == payload.get("ear_status"))
    return {"event_id": event.event_id, "recorded": {"verdict": event.type.split(".")[1],
                                                     "ear_status": payload.get("ear_status"),
                                                     "reason": (payload.get("reason") or {}).get("code")},
            "evidence_digest_matches": digest_ok,
            "now": {"verdict": "verified" if result.ok else "rejected", "ear_status": result.ear_status,
                    "reason": result.rejection.code if result.rejection else None,
                    "measurement": result.measurement},
            "same": same, "signature": event.signature}


def cmd_reverify(settings: Settings, args: argparse.Namespace) -> int:
    """Re-verify the evidence of one attestation event; exit 1 if the verdict differs today."""
    index = open_index(settings)
    try:
        event = index.event(args.event_id)
    finally:
        index.close()
    if event is None:
        raise EventNotLogged(f"event {args.event_id} is not in the audit log")
    out = reverify_event(settings, event, settings.allow_emulated and not args.no_emulated)
    if args.json:
        print_json(out)
    else:
        rec, now = out["recorded"], out["now"]
        say(f"recorded: {rec['verdict']} ({rec['ear_status'] or rec['reason']}); event signature {out['signature']}")
        say(f"now:      {now['verdict']} ({now['ear_status']}{', ' + now['reason'] if now['reason'] else ''})")
        if not out["evidence_digest_matches"]:
            say("the recorded evidence does not hash to the recorded evidence_digest")
        say("same verdict" if out["same"] else "DIFFERENT verdict")
    return 0 if out["same"] else 1


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the live audit log in the foreground until interrupted; a second one stands by.

    Raises :class:`StoreMismatch` (at start or on taking over) when the store's tail differs
    from the stream: nothing is signed over it.
    """
    nats_url = find_endpoints(settings).nats_url

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve_observability(settings) as metrics_url, \
                running_audit_log(settings, nats_url, batch=args.batch) as service:
            say(f"audit log: following {nats_url} as {service.holder}; Ctrl-C stops")
            if metrics_url:
                say(f"audit log: metrics and health on {metrics_url}/metrics, /healthz, /readyz")
            refused = asyncio.ensure_future(service.refused.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait((refused, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            refused.cancel()
            if service.refused.is_set():  # found on a takeover: the same refusal as at start
                raise StoreMismatch(service.status.reason)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """``ccpipe audit …``."""
    audit = sub.add_parser("audit", help="query, verify, prove and export the audit trail",
                           description="The tamper-evident audit trail of every event.")
    inner = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    p = add("query", cmd_query, "list logged events (filters combine)", into=inner)
    for flag, help_ in (("--workload", "workload id"), ("--commit", "git commit"),
                        ("--image", "image digest (sha256:…)"), ("--key", "KBS resource repo/type/tag"),
                        ("--node", "node id"), ("--tee", "snp, tdx, sgx, sample"), ("--backend", "evidence backend"),
                        ("--type", "event type, e.g. key.released"),
                        ("--verdict", "affirming, warning, contraindicated, rejected, released, denied, failed"),
                        ("--since", "ISO time (inclusive)"), ("--until", "ISO time (exclusive)"),
                        ("--who-got", "who got this key: key.released events of a resource"),
                        ("--ran", "everything that ran this image digest")):
        p.add_argument(flag, help=help_)
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--after", type=int, default=0, help="only events after this stream sequence (paging)")
    p = add("verify", cmd_verify, "recompute the tree; check every checkpoint and signature", into=inner)
    p.add_argument("--source", choices=("both", "store", "stream"), default="both",
                   help="check the audit store, the stream, or both (default)")
    p.add_argument("--store-only", action="store_true",
                   help="check the audit store alone (as --source store): what only the stream can confirm "
                        "is reported unchecked without failing")
    p.add_argument("--ignore-flags", action="store_true", help="do not fail on events whose signature is not valid")
    p = add("prove", cmd_prove, "inclusion proof of an event against the latest checkpoint", into=inner)
    p.add_argument("event_id")
    p = add("reverify", cmd_reverify, "re-run attestation verification on an attestation event's evidence",
            into=inner)
    p.add_argument("event_id")
    p.add_argument("--no-emulated", action="store_true", help="refuse emulated evidence this time")
    p = add("export", cmd_export, "write an offline-verifiable evidence bundle of one workload", into=inner)
    p.add_argument("--workload", required=True, help="workload id")
    p.add_argument("out", help="new directory for the bundle")
    p = add("serve", cmd_serve, "run the live audit log in the foreground", json_flag=False, into=inner)
    p.add_argument("--batch", type=int, default=1000, help="messages per fetch and transaction")
