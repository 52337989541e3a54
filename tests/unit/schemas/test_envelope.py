"""The event: canonical bytes (of its CloudEvent), strict parsing, clear errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.schemas.cloudevent_wire import source_uri
from ccpipe.schemas.cloudevents import (
    CLOUDEVENT_TYPES,
    EVENT_TYPES_BY_CLOUDEVENT_TYPE,
    cloudevent_type,
    parse_source,
)
from ccpipe.schemas.envelope import Event, Source, Subject, derived_msg_id, input_filter, subject_for
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, LimitKind, SandboxLimits, WorkloadExited, WorkloadRunning

DIGEST = "sha256:" + "0f" * 32


def exited(**kw: object) -> Event:
    fields: dict[str, object] = {"source": Source(component="runner"), **kw}
    return Event(
        type=EventType.WORKLOAD_EXITED, workload_id="hello-0123456789",
        payload=WorkloadExited(node_id="n1", exit_code=0, duration_s=1.5, output_digest=DIGEST), **fields,
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


def test_unknown_schema_version_of_a_legacy_envelope_is_a_clear_error() -> None:
    data = exited().model_dump(mode="json", exclude_none=True)
    data["schema_version"] = 99
    with pytest.raises(InvalidInput, match="schema_version 99 is not supported") as err:
        Event.from_wire(json.dumps(data))
    assert err.value.code == "event.schema_version.unknown"


def test_unknown_type_is_a_clear_error_listing_the_known_ones() -> None:
    data = json.loads(exited().canonical_bytes())
    data["type"] = "dev.ccpipe.key.stolen"
    with pytest.raises(InvalidInput, match=r"event type 'dev.ccpipe.key.stolen' is not known \(known: dev.cdevents"):
        Event.from_wire(json.dumps(data))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["data"].pop("exit_code"), r"payload.*exit_code: required field is missing"),
        (lambda d: d["data"].update(output_digest="md5:abc"), r"payload.*output_digest"),
        (lambda d: d.update(subject="has.dots", correlationid="has.dots"), r"workload_id"),
        (lambda d: d.update(extra="x"), r"'extra' are not part of a ccpipe event"),
        (lambda d: d.update(correlationid="other"), r"correlationid is not the event's subject"),
        (lambda d: d.update(specversion="0.3"), r"specversion '0.3' is not 1.0"),
        (lambda d: d.update(datacontenttype="text/plain"), r"datacontenttype 'text/plain'"),
        (lambda d: d.update(source="https://example.com/runner"), r"source .* is not /ccpipe/"),
    ],
    ids=["missing-field", "bad-digest", "workload-id-not-a-token", "unknown-attribute", "correlation",
         "specversion", "datacontenttype", "foreign-source"],
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
    wire["data"]["limits"] = {"pids": "cgroup-v2", "memory": "cgroup-v1"}
    held = Event.from_wire(json.dumps(wire)).payload
    assert isinstance(held, WorkloadRunning) and held.limits == SandboxLimits(
        pids=LimitKind.CGROUP_V2, memory=LimitKind.CGROUP_V1)
    wire["data"]["limits"]["memory"] = "cgroup-v3"
    with pytest.raises(InvalidInput, match="limits"):
        Event.from_wire(json.dumps(wire))


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_beyond_the_recursion_limit_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="nested too deeply") as err:
        Event.from_wire(text.encode())
    assert err.value.code == "event.json"


def test_the_wire_form_is_a_cloudevent() -> None:
    e = exited(causation_id="c-1", source=Source(component="runner", instance="node 1/a", key_id="ab" * 16),
               subject=Subject(image_digest=DIGEST, node="n1"))
    wire = json.loads(e.canonical_bytes())
    assert wire == {
        "specversion": "1.0", "id": e.id, "source": "/ccpipe/runner/node%201%2Fa", "type": "dev.ccpipe.workload.exited",
        "subject": "hello-0123456789", "time": e.occurred_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json", "correlationid": "hello-0123456789", "causationid": "c-1",
        "signerkeyid": "ab" * 16, "imagedigest": DIGEST, "node": "n1",
        "data": e.payload.model_dump(mode="json", exclude_none=True),
    }
    assert Event.from_wire(wire) == e


def test_an_envelope_published_before_cloudevents_still_reads() -> None:
    """Logs written before keep their bytes: the old envelope parses to the same event."""
    e = exited(causation_id="c-1", subject=Subject(commit="ab" * 20))
    legacy = e.model_dump(mode="json", exclude_none=True)
    assert legacy["schema_version"] == 1 and "specversion" not in legacy
    assert Event.from_wire(json.dumps(legacy)) == e


def test_types_are_cdevents_where_one_exists_and_one_to_one() -> None:
    assert cloudevent_type(EventType.BUILT) == "dev.cdevents.build.finished.0.2.0"
    assert cloudevent_type(EventType.SIGNED) == "dev.cdevents.artifact.signed.0.1.0"
    assert cloudevent_type(EventType.PUSHED) == "dev.cdevents.artifact.published.0.2.0"
    assert cloudevent_type(EventType.SCHEDULED) == "dev.cdevents.service.deployed.0.2.0"
    assert cloudevent_type(EventType.KEY_RELEASED) == "dev.ccpipe.key.released"
    assert len(set(CLOUDEVENT_TYPES.values())) == len(EventType)
    assert all(EVENT_TYPES_BY_CLOUDEVENT_TYPE[cloudevent_type(t)] is t for t in EventType)


@given(st.text(min_size=1, max_size=12), st.text(max_size=12))
def test_any_component_and_instance_survive_the_source_uri(component: str, instance: str) -> None:
    assert parse_source(source_uri(component, instance)) == (component, instance)
