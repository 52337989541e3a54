"""The event envelope: canonical bytes, strict parsing, clear errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.schemas.envelope import Event, Source, derived_msg_id, input_filter, subject_for
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, LimitKind, SandboxLimits, WorkloadExited, WorkloadRunning

DIGEST = "sha256:" + "0f" * 32


def exited(**kw: object) -> Event:
    return Event(
        type=EventType.WORKLOAD_EXITED, workload_id="hello-0123456789", source=Source(component="runner"),
        payload=WorkloadExited(node_id="n1", exit_code=0, duration_s=1.5, output_digest=DIGEST), **kw,
    )


def test_canonical_bytes_are_rfc8785_and_round_trip() -> None:
    e = exited()
    raw = e.canonical_bytes()
    # RFC 8785: sorted keys, no insignificant white space.
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    again = Event.from_wire(raw)
    assert again == e and again.canonical_bytes() == raw and again.digest() == e.digest()


def test_key_order_of_the_input_does_not_change_the_hash() -> None:
    e = exited()
    shuffled = json.dumps(dict(reversed(list(json.loads(e.canonical_bytes()).items()))))
    assert Event.from_wire(shuffled).digest() == e.digest()


def test_unknown_schema_version_is_a_clear_error() -> None:
    data = json.loads(exited().canonical_bytes())
    data["schema_version"] = 99
    with pytest.raises(InvalidInput, match="schema_version 99 is not supported") as err:
        Event.from_wire(json.dumps(data))
    assert err.value.code == "event.schema_version.unknown"


def test_unknown_type_is_a_clear_error_listing_the_known_ones() -> None:
    data = json.loads(exited().canonical_bytes())
    data["type"] = "key.stolen"
    with pytest.raises(InvalidInput, match=r"event type 'key.stolen' is not known \(known: submitted, built"):
        Event.from_wire(json.dumps(data))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["payload"].pop("exit_code"), r"payload.*exit_code: required field is missing"),
        (lambda d: d["payload"].update(output_digest="md5:abc"), r"payload.*output_digest"),
        (lambda d: d.update(workload_id="has.dots"), r"workload_id"),
        (lambda d: d.update(extra="x"), r"extra: unknown field"),
    ],
    ids=["missing-field", "bad-digest", "workload-id-not-a-token", "unknown-envelope-field"],
)
def test_bad_fields_are_named(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(exited().canonical_bytes())
    mutate(data)
    with pytest.raises(InvalidInput, match=match):
        Event.from_wire(json.dumps(data))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b"\xff\xfe", b'"just a string"'])
def test_garbage_is_invalid_input_never_a_crash(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        Event.from_wire(raw)


def test_subjects_and_filters() -> None:
    e = exited()
    assert e.nats_subject == "ccpipe.evt.hello-0123456789.workload.exited"
    assert subject_for("w", "key.released") == "ccpipe.evt.w.key.released"
    assert input_filter(EventType.BUILT) == "ccpipe.evt.*.built"


def test_derived_msg_id_is_deterministic_and_distinct() -> None:
    a = derived_msg_id("w", EventType.BUILT, "in-1")
    assert a == derived_msg_id("w", EventType.BUILT, "in-1")
    assert a != derived_msg_id("w", EventType.FAILED, "in-1")
    assert a != derived_msg_id("w", EventType.BUILT, "in-2")
    assert a != derived_msg_id("w2", EventType.BUILT, "in-1")


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8),
                                                                   st.booleans(), st.none()), max_size=6),
       st.integers(-255, 255))
def test_hash_is_stable_across_round_trips(claims: dict[str, object], code: int) -> None:
    e = Event(type=EventType.ATTESTATION_VERIFIED, workload_id="w-1", source=Source(component="attest"),
              payload={"tee": "snp", "backend": "emulated", "emulated": True, "evidence_digest": DIGEST,
                       "claims": claims, "ear_status": "affirming"})
    assert Event.from_wire(e.canonical_bytes()).canonical_bytes() == e.canonical_bytes()


def test_workload_running_limits_are_optional_and_checked() -> None:
    """Events of runners that did not say which limits held keep their bytes (and so their signatures)."""
    old = Event(type=EventType.WORKLOAD_RUNNING, workload_id="hello-0123456789", source=Source(component="runner"),
                payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))
    raw = old.canonical_bytes()
    assert b"limits" not in raw and Event.from_wire(raw).canonical_bytes() == raw
    wire = json.loads(raw)
    wire["payload"]["limits"] = {"pids": "cgroup-v2", "memory": "cgroup-v1"}
    held = Event.from_wire(json.dumps(wire)).payload
    assert isinstance(held, WorkloadRunning) and held.limits == SandboxLimits(
        pids=LimitKind.CGROUP_V2, memory=LimitKind.CGROUP_V1)
    wire["payload"]["limits"]["memory"] = "cgroup-v3"
    with pytest.raises(InvalidInput, match="limits"):
        Event.from_wire(json.dumps(wire))


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_beyond_the_recursion_limit_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="nested too deeply") as err:
        Event.from_wire(text.encode())
    assert err.value.code == "event.json"
