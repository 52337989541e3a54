"""The live audit log over a real nats-server: order, signatures, checkpoints, resuming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteSigner, open_checkpoint, sign_checkpoint
from ccpipe.pipeline.audit.ingest import StreamMessage
from ccpipe.pipeline.audit.logkey import load_keyring
from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.service import (
    AUDIT_STREAM,
    CHECKPOINT_SUBJECT,
    latest_published_checkpoint,
    published_checkpoints,
    running_audit_log,
    serve_audit_log,
)
from ccpipe.pipeline.audit.store.open import open_audit_store
from ccpipe.pipeline.audit.store.postgres import PostgresAudit
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.audit.streamcheck import verify_stream
from ccpipe.pipeline.audit.verify import verify_log
from ccpipe.pipeline.bus import EVENTS_STREAM, EventPublisher, connect, provision_stream
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from tests.audit_journeys import Names, journey
from tests.integration.pipeline.audit.audit_pg import ThrowawayPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test alone: the log covers the whole stream from sequence 1."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def own_js(own_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await connect(own_nats.url, name="audit-tests")
    js = nc.jetstream()
    await provision_stream(js)
    yield js
    await nc.close()


def settings_for(tmp_path: Path, nats: EmbeddedNats) -> Settings:
    return load_settings(data_dir=tmp_path / "data", nats_url=nats.url)


async def publish_journeys(js: JetStreamContext, settings: Settings, first: int, count: int) -> int:
    pub = EventPublisher(js, signer=event_signer(settings.data_dir))
    last = 0
    for n in range(first, first + count):
        for e in journey(n, denied=n % 10 == 9):
            last = (await pub.publish(e)).seq
    return last


async def test_every_event_is_logged_in_order_and_covered_by_a_signed_checkpoint(
    tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext
) -> None:
    settings = settings_for(tmp_path, own_nats)
    await publish_journeys(own_js, settings, 0, 3)
    async with running_audit_log(settings, own_nats.url) as svc:
        last = await publish_journeys(own_js, settings, 3, 3)
        await svc.wait_logged(last, timeout=20)
        note = await latest_published_checkpoint(own_js)
    keyring = load_keyring(settings.data_dir)
    assert note is not None and keyring.log_keys
    cp = open_checkpoint(note, keyring.log_keys)
    assert cp.size == last == 60
    with SqliteAudit(settings.data_dir / "audit" / "index.sqlite") as store:
        assert store.root() == cp.root
        rows = store.query(EventFilter(limit=1000))
        assert [r.seq for r in rows] == list(range(1, 61))
        assert {r.signature for r in rows} == {"valid"}
        stream = [(await own_js.get_msg(EVENTS_STREAM, r.seq)).data for r in rows]
        assert [r.raw for r in rows] == stream
        assert [e.type for e in store.journey(Names(4).workload_id)][-1] == "workload.exited"


async def test_forged_and_late_registered_signers(tmp_path: Path, own_nats: EmbeddedNats,
                                                  own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats)
    events = journey(1)
    async with running_audit_log(settings, own_nats.url) as svc:
        # A component that registers its key after the service read the keyring: the service
        # re-reads the file when it meets the unknown key id, so the event is valid.
        late = EventPublisher(own_js, signer=event_signer(settings.data_dir))
        seq_ok = (await late.publish(events[0])).seq
        # A forger without a registered key, and an altered copy under a real signature.
        rogue = ComponentKey.generate("attest")
        release = events[6]
        data = release.canonical_bytes()
        forged = data.replace(Names(1).node.encode(), b"node-666")
        good_sig = event_signer(settings.data_dir)(release)["Ccpipe-Signature"]
        for body, sig in ((forged, signature_header(rogue, forged)), (forged, good_sig), (data, None)):
            headers = {"Nats-Msg-Id": f"x{len(body)}{sig}"[:60]}
            if sig:
                headers["Ccpipe-Signature"] = sig
            ack = await own_js.publish(release.nats_subject, body, stream=EVENTS_STREAM, headers=headers)
        await svc.wait_logged(ack.seq, timeout=20)
    with SqliteAudit(settings.data_dir / "audit" / "index.sqlite") as store:
        rows = store.query(EventFilter(limit=100))
        assert [r.seq for r in rows] == list(range(1, ack.seq + 1))
        assert rows[seq_ok - 1].signature == "valid"
        assert [r.signature for r in rows[-3:]] == ["unknown_key", "bad_signature", "unsigned"]


async def test_restart_resumes_without_loss_or_double_counting(tmp_path: Path, own_nats: EmbeddedNats,
                                                               own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats)
    async with running_audit_log(settings, own_nats.url) as svc:
        first = await publish_journeys(own_js, settings, 0, 2)
        await svc.wait_logged(first)
    last = await publish_journeys(own_js, settings, 2, 2)  # while the service is down
    async with running_audit_log(settings, own_nats.url) as svc:
        await svc.wait_logged(last)
        await asyncio.sleep(0.3)
        assert svc.stats["logged"] == last - first
    with SqliteAudit(settings.data_dir / "audit" / "index.sqlite") as store:
        assert store.size() == last == 40
        assert [r.seq for r in store.query(EventFilter(limit=100))] == list(range(1, 41))


async def test_the_live_log_on_postgresql(tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext,
                                          postgres_server: ThrowawayPostgres) -> None:
    settings = load_settings(data_dir=tmp_path / "data", nats_url=own_nats.url,
                             audit_db=postgres_server.new_database())
    async with running_audit_log(settings, own_nats.url) as svc:
        last = await publish_journeys(own_js, settings, 0, 4)
        await svc.wait_logged(last, timeout=20)
        note = await latest_published_checkpoint(own_js)
    assert note is not None
    cp = open_checkpoint(note, load_keyring(settings.data_dir).log_keys)
    store = open_audit_store(settings)
    try:
        assert isinstance(store, PostgresAudit)
        assert (store.size(), store.root()) == (cp.size, cp.root) == (last, cp.root)
        report = verify_log(store, note, load_keyring(settings.data_dir))
        assert report.ok and not report.flags
        assert [e.type for e in store.key_recipients(Names(2).key)] == ["key.released"]
    finally:
        store.close()


async def test_service_factory_keeps_the_endpoints_and_keeps_its_key_private(
        tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats)
    endpoints = Endpoints(nats_url=own_nats.url, registry="127.0.0.1:5000")
    async with serve_audit_log(settings, endpoints) as got:
        assert got == endpoints  # it serves no URL of its own
        last = await publish_journeys(own_js, settings, 0, 1)
        async with asyncio.timeout(20):
            while (note := await latest_published_checkpoint(own_js)) is None or b"\n%d\n" % last not in note:
                await asyncio.sleep(0.05)
    key = settings.data_dir / "keys" / "audit" / "log.key"
    assert key.stat().st_mode & 0o777 == 0o600
    (name,) = [v.name for v in load_keyring(settings.data_dir).log_keys]
    assert name.split("/")[1] == "ccpipe" and note.startswith(name.encode() + b"\n")  # its unique origin


async def test_every_published_checkpoint_is_checked_and_a_forged_one_is_named(
        tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext) -> None:
    settings = settings_for(tmp_path, own_nats)
    async with running_audit_log(settings, own_nats.url) as svc:
        for n in range(3):
            await svc.wait_logged(await publish_journeys(own_js, settings, n, 1))
    notes = await published_checkpoints(own_js)
    assert len(notes) >= 3 and [int(n.split(b"\n")[1]) for n in notes] == sorted(int(n.split(b"\n")[1])
                                                                               for n in notes)
    keyring = load_keyring(settings.data_dir)
    stream = [StreamMessage(s.seq, s.data, s.headers.get("Ccpipe-Signature")) for s in await read_events(own_js)]
    assert verify_stream(stream, notes, keyring).ok
    # someone without the log key publishes a checkpoint of a rewritten history
    rogue = sign_checkpoint(Checkpoint("ccpipe-audit", 30, b"\x00" * 32), NoteSigner.generate("ccpipe-audit"))
    await own_js.publish(CHECKPOINT_SUBJECT, rogue, stream=AUDIT_STREAM)
    report = verify_stream(stream, await published_checkpoints(own_js), keyring)
    assert report.finding is not None and report.finding.damage.value == "checkpoint"


async def test_stopping_is_bounded_when_a_lease_request_swallows_its_cancellation(
    tmp_path: Path, own_nats: EmbeddedNats, own_js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nats-py swallows a CancelledError that lands inside a request (its flush): `ccpipe serve audit`
    # stopped with NATS at the same moment hung until killed. The writer loop must stop anyway.
    settings = settings_for(tmp_path, own_nats)
    last = await publish_journeys(own_js, settings, 0, 1)
    swallowed = asyncio.Event()

    async def acquire_swallowing_cancellation() -> bool:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        return False

    loop = asyncio.get_running_loop()
    async with running_audit_log(settings, own_nats.url) as svc:
        await svc.wait_logged(last, timeout=20)
        lease = svc._lease
        assert lease is not None
        monkeypatch.setattr(lease, "held", lambda: False)  # lost: the writer asks for it again
        monkeypatch.setattr(lease, "acquire", acquire_swallowing_cancellation)
        await asyncio.sleep(1.5)
        started = loop.time()
    assert swallowed.is_set()
    assert loop.time() - started < 15
