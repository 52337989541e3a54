"""A workload's dashboard line: its state from its validly signed events, where it ran, how long it took."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ccpipe.pipeline.audit.http.overview import OverviewFilter, matches, summarize
from ccpipe.pipeline.audit.query import IndexedEvent

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _events(*steps: tuple[str, dict[str, str]] | tuple[str, dict[str, str], str]) -> list[IndexedEvent]:
    return [IndexedEvent(seq=i + 1, leaf_index=i, event_id=f"e{i}", type=step[0], workload_id="w",
                         occurred_at=T0 + timedelta(seconds=i), component="c",
                         signature=step[2] if len(step) == 3 else "valid", summary=f"{step[0]} says why",
                         fields=step[1]) for i, step in enumerate(steps)]


PLACED = ("scheduled", {"node_id": "node-1", "tee": "snp"})


def test_a_whole_journey_succeeds_on_its_node() -> None:
    s = summarize("w", _events(("submitted", {}), PLACED, ("workload.running", {}),
                               ("workload.exited", {"exit_code": "0"})))
    assert s is not None
    assert (s.state, s.tee, s.node_id, s.duration_s, s.failure_reason, s.events) == (
        "succeeded", "snp", "node-1", 3.0, None, 4)


def test_a_non_zero_exit_or_a_failed_stage_fails_it_for_good() -> None:
    exited = summarize("w", _events(PLACED, ("workload.exited", {"exit_code": "3"})))
    assert exited is not None and (exited.state, exited.failure_reason) == ("failed", "workload.exited says why")
    failed = summarize("w", _events(("failed", {}), ("submitted", {})))
    assert failed is not None and (failed.state, failed.failure_reason) == ("failed", "failed says why")


def test_a_refusal_denies_it_until_a_retry_gets_its_key() -> None:
    refused = _events(PLACED, ("attestation.rejected", {}), ("key.denied", {}))
    denied = summarize("w", refused)
    assert denied is not None and (denied.state, denied.failure_reason) == ("denied", "attestation.rejected says why")
    retried = summarize("w", _events(PLACED, ("attestation.rejected", {}), ("attestation.verified", {}),
                                     ("key.released", {})))
    assert retried is not None and (retried.state, retried.failure_reason) == ("in_progress", None)


def test_events_not_validly_signed_are_counted_but_not_judged() -> None:
    s = summarize("w", _events(("submitted", {}), ("failed", {}, "bad_signature")))
    assert s is not None and (s.state, s.flagged, s.last_event) == ("in_progress", 1, "submitted")
    assert summarize("w", []) is None


def test_filters() -> None:
    s = summarize("w", _events(PLACED, ("workload.running", {})))
    assert s is not None
    assert matches(s, OverviewFilter(state="running", tee="snp", node_id="node-1", since=T0, until=T0 + timedelta(1)))
    assert not matches(s, OverviewFilter(state="failed"))
    assert not matches(s, OverviewFilter(tee="tdx"))
    assert not matches(s, OverviewFilter(since=T0 + timedelta(seconds=2)))
    assert not matches(s, OverviewFilter(until=T0))
