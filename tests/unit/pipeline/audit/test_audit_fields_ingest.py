"""What the index extracts from each event, and how ingest flags signatures (never drops)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.fields import INVALID_TYPE, extract, from_micros, normalize_key
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage, prepare_rows
from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, SchedulingPending
from tests.audit_journeys import Names, Signers, journey


def test_every_event_of_a_journey_is_extracted_like_the_model_reads_it() -> None:
    for e in journey(4) + journey(9, denied=True):
        x = extract(e.canonical_bytes())
        assert (x.event_id, x.type, x.workload_id, x.component) == (
            e.id, e.type.value, e.workload_id, e.source.component)
        assert from_micros(x.occurred_at_us) == e.occurred_at
        assert x.summary


def test_an_envelope_logged_before_cloudevents_is_indexed_alike() -> None:
    """Logs written with the old envelope keep their bytes; the index reads them as it reads CloudEvents."""
    for e in journey(5):
        legacy = json.dumps(e.model_dump(mode="json", exclude_none=True)).encode()
        assert extract(legacy) == extract(e.canonical_bytes())


def test_terms_carry_what_auditors_search_for() -> None:
    by_type = {e.type.value: extract(e.canonical_bytes()) for e in journey(4)}
    w = Names(4)
    assert ("commit", w.commit) in by_type["submitted"].terms
    assert {("image", w.image), ("image", w.plain_image), ("key", w.key)} <= set(by_type["signed"].terms)
    assert {("key", w.key), ("node", w.node), ("verdict", "released")} <= set(by_type["key.released"].terms)
    assert {("tee", "snp"), ("backend", "emulated"), ("verdict", "affirming")} <= set(
        by_type["attestation.verified"].terms)
    assert by_type["signed"].fields["key_resource"] == w.key  # kbs:/// prefix dropped


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_is_indexed_under_its_own_type(event_type: EventType) -> None:
    # The index reads the envelope only; a payload it does not know the shape of is still the event.
    data = json.dumps({"schema_version": 1, "id": "e-1", "type": event_type.value, "workload_id": "w",
                       "occurred_at": "2026-01-01T00:00:00Z", "source": {"component": "deploy"},
                       "payload": {}}).encode()
    assert extract(data).type == event_type.value


def test_a_waiting_workload_is_searchable_with_its_reason() -> None:
    e = Event(type=EventType.SCHEDULING_PENDING, workload_id="wl-wait", source=Source(component="deploy"),
              payload=SchedulingPending(reason="no snp node with free capacity", attempt=2))
    x = extract(e.canonical_bytes())
    assert (x.type, x.fields["reason"], x.fields["attempt"]) == (
        "scheduling.pending", "no snp node with free capacity", "2")
    assert x.summary == "waiting for a node (attempt 2): no snp node with free capacity"


@pytest.mark.parametrize("resource", ["kbs:///a/b/c", "a/b/c", "/a/b/c", " kbs:///a/b/c "])
def test_key_resources_are_one_spelling(resource: str) -> None:
    assert normalize_key(resource) == "a/b/c"


@pytest.mark.parametrize(("data", "why"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"id": "x", "type": "key.stolen", "workload_id": "w", "occurred_at": "2026-01-01T00:00:00Z"}', "not known"),
    (json.dumps({"schema_version": 1, "id": "x", "type": "failed", "workload_id": "w", "occurred_at": "yesterday",
                 "source": {"component": "build"}, "payload": {}}).encode(), "occurred_at"),
])
def test_a_message_that_is_not_an_event_is_indexed_as_invalid(data: bytes, why: str) -> None:
    x = extract(data)
    assert x.type == INVALID_TYPE and why in x.summary


def test_unknown_keys_make_the_keyring_file_be_read_again(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    Keyring().save(path)
    keys = KeyringFile(path)
    late = ComponentKey.generate("submit")
    event = journey(1)[0]
    data = event.canonical_bytes()
    assert keys.state(data, signature_header(late, data)) == "unknown_key"
    ring = Keyring()
    ring.add("submit", late.public_key)
    ring.save(path)
    assert keys.state(data, signature_header(late, data)) == "valid"
    assert keys.reload() is False  # unchanged file: not read again


def test_ingest_flags_every_kind_of_bad_signature_and_drops_nothing(tmp_path: Path) -> None:
    signers = Signers()
    signers.keyring.save(tmp_path / "keyring.json")
    keys = KeyringFile(tmp_path / "keyring.json")
    events = journey(2)
    good = events[6].canonical_bytes()  # key.released, by the KBS
    altered = good.replace(Names(2).node.encode(), b"node-299")
    by_sign = signature_header(signers.keys["sign"], good)  # valid signature, wrong component
    # honestly signed by the component it names, which may not release keys
    by_attest = events[6].model_copy(update={"source": events[6].source.model_copy(update={"component": "attest"})})
    attest_data = by_attest.canonical_bytes()
    msgs = [
        StreamMessage(1, good, signers.header(events[6], good)),
        StreamMessage(2, altered, signers.header(events[6], good)),
        StreamMessage(3, good, by_sign),
        StreamMessage(4, good, None),
        StreamMessage(5, good, "garbage"),
        StreamMessage(6, b"not json", None),
        StreamMessage(7, attest_data, signature_header(signers.keys["attest"], attest_data)),
    ]
    assert [r.signature for r in prepare_rows(keys, msgs)] == [
        "valid", "bad_signature", "wrong_signer", "unsigned", "bad_signature", "unsigned", "not_emitter"]
    with SqliteAudit(tmp_path / "a.sqlite") as store:
        Ingestor(store, keys).ingest(msgs)
        rows = store.query(EventFilter())
        assert [r.seq for r in rows] == list(range(1, 8)) and store.size() == 7
        assert rows[5].type == INVALID_TYPE and rows[5].raw == b"not json"
        # a redelivered batch is not counted twice
        done = Ingestor(store, keys).ingest(msgs[3:])
        assert (done.skipped, store.size(), len(store.query(EventFilter()))) == (4, 7, 7)


def test_worker_processes_give_the_same_rows(tmp_path: Path) -> None:
    signers = Signers()
    signers.keyring.save(tmp_path / "keyring.json")
    msgs = [StreamMessage(i + 1, e.canonical_bytes(), signers.header(e, e.canonical_bytes()))
            for i, e in enumerate(journey(1) + journey(2))]
    keys = KeyringFile(tmp_path / "keyring.json")
    ing = Ingestor(SqliteAudit(tmp_path / "a.sqlite"), keys, workers=2)
    try:
        assert ing.submit(msgs).result(timeout=60) == prepare_rows(keys, msgs)
    finally:
        ing.close()
