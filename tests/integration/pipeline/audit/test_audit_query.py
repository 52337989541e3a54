"""Queries on the audit index, the same tests on every backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ccpipe.pipeline.audit.query import EventFilter, QueryError
from ccpipe.pipeline.audit.store.postgres import PostgresAudit
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from tests.audit_journeys import Names

Store = SqliteAudit | PostgresAudit

pytestmark = pytest.mark.integration


def test_journey_is_the_whole_chain_in_stream_order(filled: Store) -> None:
    j = filled.journey(Names(3).workload_id)
    assert [e.type for e in j] == ["submitted", "built", "signed", "pushed", "scheduled", "attestation.verified",
                                   "key.released", "enclave.launched", "workload.running", "workload.exited"]
    assert [e.seq for e in j] == sorted(e.seq for e in j)
    assert all(e.signature == "valid" for e in j)
    # raw is the logged leaf: the canonical bytes, whose id is the event id
    assert all(json.loads(e.raw)["id"] == e.event_id for e in j)
    assert j[0].fields["commit"] == Names(3).commit


def test_by_image_finds_the_workload_from_the_point_its_image_is_known(filled: Store) -> None:
    got = filled.query(EventFilter(image_digest=Names(4).image))
    assert {e.workload_id for e in got} == {Names(4).workload_id}
    assert got[0].type == "signed" and got[-1].type == "workload.exited"


def test_by_commit_covers_the_journey(filled: Store) -> None:
    got = filled.query(EventFilter(commit=Names(5).commit))
    assert len(got) == 10 and {e.workload_id for e in got} == {Names(5).workload_id}


def test_who_got_this_key_in_either_spelling(filled: Store) -> None:
    key = Names(2).key
    got = filled.key_recipients(key)
    assert [(e.type, e.fields["node_id"]) for e in got] == [("key.released", Names(2).node)]
    assert filled.key_recipients(f"kbs:///{key}") == got
    # the KBS's refusal of a key is not a recipient
    assert filled.key_recipients(Names(9).key) == []
    assert [e.type for e in filled.query(EventFilter(key_resource=Names(9).key))] == ["signed", "key.denied"]


def test_the_forged_release_is_listed_but_flagged(filled: Store) -> None:
    got = filled.key_recipients(Names(0).key)
    assert [e.signature for e in got] == ["valid", "bad_signature", "unknown_key"]
    assert got[1].fields["node_id"] == "node-299"
    flagged = filled.flagged()
    assert [e.signature for e in flagged] == ["bad_signature", "unknown_key", "unsigned"]


def test_runs_of_an_image(filled: Store) -> None:
    got = filled.runs_of_image(Names(7).image)
    assert [e.type for e in got] == ["scheduled", "key.released", "enclave.launched", "workload.running",
                                     "workload.exited"]


def test_filters_combine(filled: Store) -> None:
    tdx = filled.query(EventFilter(tee="tdx", event_type="attestation.verified", limit=1000))
    assert tdx and all(e.fields["tee"] == "tdx" for e in tdx)
    assert len(tdx) == 12  # the 15 odd workloads 1..29 minus the denied 9, 19, 29
    rejected = filled.query(EventFilter(verdict="rejected"))
    assert [e.workload_id for e in rejected] == [Names(n).workload_id for n in (9, 19, 29)]
    node = Names(1).node
    assert {e.type for e in filled.query(EventFilter(node_id=node, backend="emulated"))} == {
        "scheduled", "attestation.verified", "enclave.launched"}


def test_time_range_and_paging(filled: Store) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    window = filled.query(EventFilter(since=t0 + timedelta(seconds=2), until=t0 + timedelta(seconds=3), limit=1000))
    assert window and all(t0 + timedelta(seconds=2) <= e.occurred_at < t0 + timedelta(seconds=3) for e in window)
    page1 = filled.query(EventFilter(limit=50))
    page2 = filled.query(EventFilter(limit=50, after_seq=page1[-1].seq))
    assert [e.seq for e in page1 + page2] == list(range(1, 101))


def test_event_lookup_and_workload_search(filled: Store) -> None:
    j = filled.journey(Names(11).workload_id)
    assert filled.event(j[4].event_id) == j[4]
    assert filled.event("no-such-id") is None
    assert filled.workloads("0000001", limit=100)[:2] == [Names(19).workload_id, Names(18).workload_id]
    assert filled.workloads("_", limit=5) == []  # a LIKE wildcard is matched literally


def test_bad_limits_are_refused(filled: Store) -> None:
    with pytest.raises(QueryError):
        filled.query(EventFilter(limit=0))
    with pytest.raises(QueryError):
        filled.query(EventFilter(after_seq=-1))


def test_index_matches_the_log(filled: Store) -> None:
    rows = filled.query(EventFilter(limit=1000))
    assert len(rows) == filled.size() == filled.last_stream_seq()
    leaves = list(filled.leaves())
    assert [r.raw for r in rows] == [leaf.data for leaf in leaves]
    assert [r.leaf_index for r in rows] == [leaf.index for leaf in leaves]
