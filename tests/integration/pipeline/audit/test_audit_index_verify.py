"""``audit verify`` rebuilds the query index from the leaves and names every difference, and
compares the leaves no checkpoint covers yet with the stream, on every backend (SQLite,
PostgreSQL): whoever can write the database must not be able to change what ``audit query``,
the API and the web page answer, or the leaves the next checkpoint will sign, unnamed."""

from __future__ import annotations

import json

import pytest

from ccpipe.pipeline.audit.ingest import StreamMessage
from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.pipeline.audit.store.postgres import PostgresAudit
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.audit.verify import Damage, IndexDifference, verify_index, verify_tail
from tests.audit_journeys import Names, Signers

Store = SqliteAudit | PostgresAudit

pytestmark = pytest.mark.integration


def tamper(store: Store, sql: str, *params: object) -> None:
    """Write the database behind the store's back, as a rogue administrator would."""
    store._run(sql, params)


def differences(store: Store, signers: Signers) -> list[IndexDifference]:
    report = verify_index(store, signers.keyring)
    assert report.ok == (not report.differences)
    return report.differences


def release_of(store: Store, n: int) -> tuple[int, str]:
    """(stream seq, event id) of workload ``n``'s key.released row."""
    [row] = [e for e in store.journey(Names(n).workload_id) if e.type == "key.released"]
    return row.seq, row.event_id


def test_an_untouched_index_is_the_rebuild(filled: Store, signers: Signers) -> None:
    report = verify_index(filled, signers.keyring)
    assert report.ok and report.rows_checked == filled.size()


def test_rewriting_who_got_a_key_is_named(filled: Store, signers: Signers) -> None:
    seq, event_id = release_of(filled, 3)
    fields = json.dumps({**filled.journey(Names(3).workload_id)[6].fields, "node_id": "node-299"}, sort_keys=True)
    tamper(filled, "UPDATE idx_events SET fields = ? WHERE seq = ?", fields, seq)
    tamper(filled, "UPDATE idx_terms SET value = 'node-299' WHERE kind = 'node' AND seq = ?", seq)
    assert filled.key_recipients(Names(3).key)[0].fields["node_id"] == "node-299"  # what a user would now read
    where = f"event {event_id} (seq {seq})"
    assert [str(d) for d in differences(filled, signers)] == [
        f"{where}: fields.node_id is 'node-299' in the index; the leaf gives '{Names(3).node}'",
        f"{where}: the index lacks its idx_terms row 'node={Names(3).node}'",
        f"{where}: the index holds an idx_terms row 'node=node-299' that no leaf gives",
    ]


def test_deleting_every_key_release_is_named(filled: Store, signers: Signers) -> None:
    released = filled.key_recipients(Names(0).key)[:1] + [
        e for n in range(1, 30) for e in filled.journey(Names(n).workload_id) if e.type == "key.released"]
    tamper(filled, "DELETE FROM idx_terms WHERE seq IN (SELECT seq FROM idx_events WHERE type = 'key.released')")
    tamper(filled, "DELETE FROM idx_events WHERE type = 'key.released'")
    assert filled.key_recipients(Names(3).key) == []
    missing = {d.where for d in differences(filled, signers) if d.table == "idx_events" and d.stored is None}
    assert {f"event {e.event_id} (seq {e.seq})" for e in released} <= missing
    assert len(missing) == len(released) + 2  # and the two forged releases the fixture logged


def test_flipping_a_signature_verdict_is_named(filled: Store, signers: Signers) -> None:
    forged = filled.key_recipients(Names(0).key)[1]
    assert forged.signature == "bad_signature"
    tamper(filled, "UPDATE idx_events SET signature = 'valid' WHERE seq = ?", forged.seq)
    assert [str(d) for d in differences(filled, signers)] == [
        f"event {forged.event_id} (seq {forged.seq}): signature is 'valid' in the index; the leaf gives "
        "'bad_signature'"]


def test_an_extra_row_is_named(filled: Store, signers: Signers) -> None:
    tamper(filled, "INSERT INTO idx_events SELECT 999999, 999999, 'made-up', type, workload_id, occurred_at, "
                   "component, signature, summary, fields FROM idx_events WHERE seq = 7")
    tamper(filled, "INSERT INTO idx_terms VALUES ('node', 'node-777', 999999)")
    tamper(filled, "INSERT INTO idx_workloads VALUES ('wl-ghost', 999999, 999999)")
    found = [str(d) for d in differences(filled, signers)]
    assert len(found) == 3, found
    assert found[0].startswith("event made-up (seq 999999): the index holds an idx_events row (999999, 999999, ")
    assert found[1] == "seq 999999 (no leaf): the index holds an idx_terms row 'node=node-777' that no leaf gives"
    assert found[2] == "workload wl-ghost: the index holds an idx_workloads row (999999, 999999) that no leaf gives"


def test_a_workload_losing_its_image_is_named(filled: Store, signers: Signers) -> None:
    wl = Names(4).workload_id
    tamper(filled, "DELETE FROM idx_workload_terms WHERE workload_id = ? AND kind = 'image'", wl)
    tamper(filled, "UPDATE idx_workloads SET first_seq = first_seq + 1 WHERE workload_id = ?", wl)
    found = [str(d) for d in differences(filled, signers)]
    assert f"workload {wl}: the index lacks its idx_workload_terms row 'image={Names(4).image}'" in found
    assert any(s.startswith(f"workload {wl}: first_seq, last_seq is ") for s in found), found


def test_the_list_is_bounded_but_the_count_is_not(filled: Store, signers: Signers) -> None:
    tamper(filled, "UPDATE idx_events SET summary = 'nothing happened'")
    report = verify_index(filled, signers.keyring, limit=10)
    assert len(report.differences) == 10 and report.unlisted == filled.size() - 10


def stream_of(store: Store) -> dict[int, StreamMessage]:
    """The stream the store was logged from, by sequence (its leaves are exactly the messages)."""
    return {leaf.stream_seq: StreamMessage(leaf.stream_seq, leaf.data, leaf.signature) for leaf in store.leaves()}


def test_the_leaves_after_the_checkpoint_are_the_streams(filled: Store) -> None:
    stream = stream_of(filled)
    tail = verify_tail(filled, 250, stream)
    assert (tail.first, tail.leaves, tail.finding, tail.against_stream) == (250, filled.size() - 250, None, True)
    assert verify_tail(filled, filled.size(), stream).leaves == 0


def test_a_forged_tail_leaf_is_named(filled: Store) -> None:
    stream = stream_of(filled)
    [leaf] = filled.leaves(260, 261)
    forged = leaf.data.replace(b"node-", b"node-9")
    assert forged != leaf.data
    # Its leaf hash rewritten too: only the stream can tell, no checkpoint covers it yet.
    tamper(filled, "UPDATE leaves SET data = ?, leaf_hash = ? WHERE idx = ?", forged, leaf_hash(forged), 260)
    tail = verify_tail(filled, 250, stream)
    assert tail.finding is not None and (tail.finding.index, tail.finding.damage) == (260, Damage.MODIFIED)
    assert tail.finding.detail == f"leaf 260's bytes differ from stream message {leaf.stream_seq}'s"
    # Without the stream the same tail passes its own checks, and the report says it was not compared.
    unchecked = verify_tail(filled, 250, None)
    assert unchecked.finding is None and not unchecked.against_stream


def test_a_tail_leaf_the_stream_never_had_is_named(filled: Store) -> None:
    stream = stream_of(filled)
    last = filled.size() - 1
    del stream[max(stream)]
    tail = verify_tail(filled, 250, stream)
    assert tail.finding is not None and (tail.finding.index, tail.finding.damage) == (last, Damage.INSERTED)
    assert "never published" in tail.finding.detail
