"""A real audit trail on disk for the HTTP API and web page tests.

Events go through the real write path (signed by their components, :class:`Ingestor` →
:class:`SqliteAudit`, checkpoint signed by :func:`publish_checkpoint`), into the data
directory layout ``serve_audit_api`` reads (``<data>/audit/index.sqlite`` and the keyring).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.open import sqlite_path
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.event_signature import signature_header
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas import events as ev
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source, Subject
from ccpipe.schemas.failure import FailureReason
from tests.audit_journeys import Names, Signers, journey

DEMO = 1
"""Number of the workload with the whole, successful journey (:func:`demo_journey`)."""
DENIED = 9
"""Number of the workload whose attestation is rejected and key denied."""
FAILED_WL = "broken-build"
"""A workload whose build failed."""
HOSTILE_PUSHER = '<img src=x onerror="window.__pwned=1">'
"""Event text that is markup: the page must show it as text and never run it."""


@dataclass
class Trail:
    """The trail on disk and what tests need to ask about it."""

    settings: Settings
    signer: NoteSigner
    events: dict[str, list[Event]]
    """Events by workload id, in stream order."""

    @property
    def db(self) -> Path:
        return sqlite_path(self.settings)

    def store(self) -> SqliteAudit:
        return SqliteAudit(self.db)

    def tamper_leaf(self, event_id: str, old: bytes, new: bytes) -> None:
        """Rewrite the logged bytes of one event, as a rogue admin with the database would."""
        with sqlite3.connect(self.db) as db:
            (data,) = db.execute("SELECT data FROM leaves WHERE event_id = ?", (event_id,)).fetchone()
            assert old in data, "the bytes to replace are not in the leaf"
            db.execute("UPDATE leaves SET data = ? WHERE event_id = ?", (bytes(data).replace(old, new), event_id))


RUNNER_EVIDENCE = "sha256:" + "5e" * 32
"""Evidence digest of the demo's build-runner attestation."""
SIGNATURE_KEY = "ccpipe/hello-00000001/cosign-pubkey"
"""The second resource the demo's enclave gets (the image's signature key)."""


def demo_journey() -> list[Event]:
    """The demo workload as ``ccpipe demo`` logs it: the synthetic journey plus the build runner's
    attestation (verified before signing) and a second key release (the signature key)."""
    events = journey(DEMO)
    built, enclave_att, release = events[1], events[5], events[6]
    runner = Event(type=ev.EventType.ATTESTATION_VERIFIED, workload_id=built.workload_id,
                   occurred_at=built.occurred_at + timedelta(seconds=0.2), source=Source(component="attest"),
                   causation_id=built.id,
                   payload=enclave_att.payload.model_copy(update={"evidence_digest": RUNNER_EVIDENCE,
                                                                  "ear_status": "warning"}))
    second = Event(type=ev.EventType.KEY_RELEASED, workload_id=release.workload_id,
                   occurred_at=release.occurred_at + timedelta(seconds=0.1), source=Source(component="kbs"),
                   subject=Subject(key_id=SIGNATURE_KEY, node=release.subject.node),
                   payload=release.payload.model_copy(update={"resource": SIGNATURE_KEY}))
    return [*events[:2], runner, *events[2:7], second, *events[7:]]


def _failed_events() -> list[Event]:
    src = Source(component="submit", instance="host-1")
    submitted = journey(2)[0]
    sub = Event(type=ev.EventType.SUBMITTED, workload_id=FAILED_WL, source=src,
                subject=submitted.subject,
                payload=submitted.payload.model_copy(update={"pusher": HOSTILE_PUSHER}))
    reason = FailureReason(stage="build", code="build.copy.missing", message="app/ does not exist at the commit")
    failed = Event(type=ev.EventType.FAILED, workload_id=FAILED_WL, source=Source(component="build"),
                   subject=Subject(commit=submitted.subject.commit), causation_id=sub.id,
                   payload=ev.Failed(reason=reason, input_event_id=sub.id, input_type="submitted"))
    return [sub, failed]


def build_trail(data_dir: Path, *, checkpoint: bool = True) -> Trail:
    """A trail with the demo journey, a denied one and a failed one (every event type),
    checkpointed by a log key registered in the keyring, under ``data_dir``."""
    settings = Settings(data_dir=data_dir)
    signers = Signers()
    log = NoteSigner.generate("ccpipe-audit")
    ring: Keyring = signers.keyring
    ring.add_log_key(log.verifier)
    ring_path = keyring_path(data_dir)
    ring_path.parent.mkdir(parents=True, exist_ok=True)
    ring.save(ring_path)
    by_wl: dict[str, list[Event]] = {}
    for batch in (demo_journey(), journey(DENIED, denied=True), _failed_events()):
        by_wl[batch[0].workload_id] = batch
    sqlite_path(settings).parent.mkdir(parents=True, exist_ok=True)
    store = SqliteAudit(sqlite_path(settings))
    try:
        ingest = Ingestor(store, KeyringFile(ring_path))
        seq = 1
        for batch in by_wl.values():
            msgs = []
            for e in batch:
                data = e.canonical_bytes()
                signer = signers.keys[e.source.component]
                msgs.append(StreamMessage(seq, data, signature_header(signer, data)))
                seq += 1
            ingest.ingest(msgs)
        if checkpoint:
            publish_checkpoint(store, log)
    finally:
        store.close()
    return Trail(settings, log, by_wl)


def demo_names() -> Names:
    """Identifiers of the demo workload."""
    return Names(DEMO)
