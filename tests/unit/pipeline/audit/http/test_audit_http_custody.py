"""Chain of custody from a workload's indexed events: stage order, statuses, verdicts, digests."""

from __future__ import annotations

from collections.abc import Sequence

from ccpipe.pipeline.audit.fields import extract, from_micros
from ccpipe.pipeline.audit.http.custody import STAGES, chain_of_custody
from ccpipe.pipeline.audit.query import IndexedEvent
from ccpipe.schemas import events as ev
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.failure import FailureReason
from tests.audit_journeys import Names, journey

ORDER = ["commit", "build", "provenance", "signature", "push", "placement", "attestation", "key_release", "run"]


def indexed(events: Sequence[Event]) -> list[IndexedEvent]:
    """The index's view of ``events``, through the indexer's own field extraction."""
    out = []
    for i, e in enumerate(events):
        x = extract(e.canonical_bytes())
        out.append(IndexedEvent(seq=i + 1, leaf_index=i, event_id=x.event_id, type=x.type, workload_id=x.workload_id,
                                occurred_at=from_micros(x.occurred_at_us), component=x.component, signature="valid",
                                summary=x.summary, fields=x.fields, raw=e.canonical_bytes()))
    return out


def by_stage(events: Sequence[Event]) -> dict[str, dict[str, object]]:
    return {s.stage: s.model_dump() for s in chain_of_custody(indexed(events))}


def test_stages_are_in_flow_order_whatever_happened() -> None:
    assert [s.name for s in STAGES] == ORDER
    assert [s.stage for s in chain_of_custody([])] == ORDER
    assert {s.status for s in chain_of_custody([])} == {"missing"}


def test_a_whole_journey_is_done_with_its_digests_and_verdicts() -> None:
    events = journey(4)
    n = Names(4)
    got = by_stage(events)
    assert {k: v["status"] for k, v in got.items()} == dict.fromkeys(ORDER, "done")
    assert got["commit"]["digests"]["commit"] == n.commit  # type: ignore[index]
    assert got["build"]["digests"] == {"image_digest": n.plain_image}
    assert got["provenance"]["digests"]["provenance_digest"].startswith("sha384:")  # type: ignore[index]
    assert got["signature"]["digests"]["image_digest"] == n.image  # type: ignore[index]
    assert got["signature"]["digests"]["key_resource"] == n.key  # type: ignore[index]
    assert got["placement"]["digests"]["node_id"] == n.node  # type: ignore[index]
    assert (got["attestation"]["verdict"], got["key_release"]["verdict"], got["run"]["verdict"]) == (
        "affirming", "released", "exit 0")
    built = events[1].id
    assert got["build"]["event_ids"] == got["provenance"]["event_ids"] == [built]
    assert got["run"]["event_ids"] == [e.id for e in events[-3:]]


def test_refused_attestation_and_key_fail_their_stages_and_the_run_is_missing() -> None:
    got = by_stage(journey(9, denied=True))
    assert got["attestation"]["status"] == got["key_release"]["status"] == "failed"
    assert (got["attestation"]["verdict"], got["key_release"]["verdict"]) == ("rejected", "denied")
    assert got["run"]["status"] == "missing" and got["run"]["event_ids"] == []


def _replace_payload(event: Event, **changes: object) -> Event:
    return event.model_copy(update={"payload": event.payload.model_copy(update=changes)})


def test_a_contraindicated_attestation_fails_though_it_was_verified() -> None:
    events = journey(2)
    events[5] = _replace_payload(events[5], ear_status="contraindicated")
    got = by_stage(events)
    assert got["attestation"]["status"] == "failed" and got["attestation"]["verdict"] == "contraindicated"


def test_a_nonzero_exit_fails_the_run() -> None:
    events = journey(2)
    events[-1] = _replace_payload(events[-1], exit_code=3)
    got = by_stage(events)
    assert got["run"]["status"] == "failed" and got["run"]["verdict"] == "exit 3"


def test_a_failed_event_marks_the_first_stage_without_events() -> None:
    events = journey(3)[:3]  # submitted, built, signed; then the push failed
    reason = FailureReason(stage="deploy", code="deploy.registry.unreachable", message="registry down")
    failed = Event(type=ev.EventType.FAILED, workload_id=events[0].workload_id, source=Source(component="deploy"),
                   payload=ev.Failed(reason=reason, input_event_id=events[2].id, input_type="signed"))
    got = by_stage([*events, failed])
    assert [got[s]["status"] for s in ORDER] == ["done"] * 4 + ["failed"] + ["missing"] * 4
    assert got["push"]["verdict"] == "deploy.registry.unreachable"
    assert got["push"]["event_ids"] == [failed.id]


def test_a_retried_attestation_keeps_every_event_and_the_last_verdict() -> None:
    events = journey(6)
    retry = events[5].model_copy(update={"id": "01a203cc-0000-7000-8000-00000000beef"})
    first = _replace_payload(events[5], ear_status="contraindicated")
    got = by_stage([*events[:5], first, retry, *events[6:]])
    assert got["attestation"]["event_ids"] == [first.id, retry.id]
    assert (got["attestation"]["status"], got["attestation"]["verdict"]) == ("done", "affirming")


def test_events_without_a_valid_component_signature_are_flagged_on_their_stage() -> None:
    rows = indexed(journey(4))
    forged = rows[6]
    rows[6] = IndexedEvent(**{**forged.__dict__, "signature": "bad_signature"})
    steps = {s.stage: s for s in chain_of_custody(rows)}
    assert steps["key_release"].flagged == [forged.event_id]
    assert [s.stage for s in steps.values() if s.flagged] == ["key_release"]


def _with_runner_attestation(n: int, **changes: object) -> tuple[list[Event], Event]:
    """Journey ``n`` in the real flow's order: the build runner's evidence is verified between
    ``built`` and ``signed`` (the sign stage waits for it), then the enclave's after placement."""
    events = journey(n)
    runner = events[5].model_copy(update={"id": "01a203cc-0000-7000-8000-0000000000aa",
                                          "payload": events[5].payload.model_copy(update={
                                              "evidence_digest": "sha256:" + "e" * 64, **changes})})
    return [*events[:2], runner, *events[2:]], runner


def test_the_build_runner_attestation_backs_the_provenance_not_the_enclave_stage() -> None:
    events, runner = _with_runner_attestation(4, ear_status="warning")
    got = by_stage(events)
    assert got["provenance"]["event_ids"] == [events[1].id, runner.id]
    assert got["provenance"]["verdict"] == "warning" and got["provenance"]["status"] == "done"
    assert got["provenance"]["digests"]["evidence_digest"] == "sha256:" + "e" * 64  # type: ignore[index]
    assert got["attestation"]["event_ids"] == [events[6].id]  # the enclave's, after placement
    assert got["attestation"]["verdict"] == "affirming"


def test_a_contraindicated_build_runner_fails_the_provenance() -> None:
    events, _ = _with_runner_attestation(4, ear_status="contraindicated")
    got = by_stage(events)
    assert (got["provenance"]["status"], got["provenance"]["verdict"]) == ("failed", "contraindicated")
    assert got["attestation"]["status"] == "done"


def test_a_stage_with_two_key_releases_names_both_resources() -> None:
    events = journey(4)
    second = events[6].model_copy(update={"id": "01a203cc-0000-7000-8000-0000000000bb", "payload": events[6].payload
                                          .model_copy(update={"resource": "ccpipe/hello/cosign-pubkey"})})
    got = by_stage([*events[:7], second, *events[7:]])
    assert got["key_release"]["digests"]["key_resource"] == (  # type: ignore[index]
        f"{Names(4).key}, ccpipe/hello/cosign-pubkey")
    assert got["key_release"]["digests"]["node_id"] == Names(4).node  # type: ignore[index]
