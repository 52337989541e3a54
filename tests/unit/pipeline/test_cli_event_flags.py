"""``ccpipe events``/``status`` flag what no consumer would act on, and judge the state without it."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from ccpipe.pipeline.cli.events import EventsLine, Flagger, as_json, judge, line_for, status_exit_code
from ccpipe.pipeline.reader import StoredEvent
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.cloudevents import CloudEvent
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Failed, WorkloadRunning
from ccpipe.schemas.failure import FailureReason

DIGEST = "sha256:" + "ab" * 32


def stored(seq: int, event: Event, data_dir: Path | None, subject: str | None = None) -> StoredEvent:
    data = event.canonical_bytes()
    headers = event_signer(data_dir)(event, data) if data_dir else {}
    return StoredEvent(seq, event, data, headers, subject=subject or event.nats_subject)


def running(component: str = "runner", wl: str = "wl-1") -> Event:
    return Event(type=EventType.WORKLOAD_RUNNING, workload_id=wl, source=Source(component=component),
                 payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))


def test_each_kind_of_untrusted_event_is_flagged(tmp_path: Path) -> None:
    flagger = Flagger(load_settings(data_dir=tmp_path))
    genuine = running()
    assert flagger.flag(stored(1, genuine, tmp_path)) is None
    assert flagger.flag(stored(2, running(), None)) == "unsigned"
    assert flagger.flag(stored(3, running("build"), tmp_path)) == "not-emitter"
    assert flagger.flag(stored(4, genuine, tmp_path, subject="ccpipe.evt.victim.workload.running")) == "wrong-subject"
    assert flagger.flag(stored(5, genuine, tmp_path)) == "replay"


def test_the_flag_is_shown_in_the_table_and_in_json(tmp_path: Path) -> None:
    s = stored(7, running("build"), tmp_path)
    flag = Flagger(load_settings(data_dir=tmp_path)).flag(s)
    assert "!NOT-EMITTER" in line_for(s, flag)
    assert as_json(s, flag)["flag"] == "not-emitter"
    assert "flag" not in as_json(s)


def test_every_json_line_validates_against_the_exported_line_schema(tmp_path: Path) -> None:
    """The stream's ``seq`` and the ``flag`` ride as CloudEvents extension attributes; an unreadable message
    has its own shape."""
    s = stored(7, running("build"), tmp_path)
    unreadable = StoredEvent(8, None, b"\xffnot json", {}, error="event is not JSON")
    lines = [as_json(s, "not-emitter"), as_json(s), as_json(unreadable)]
    for line in lines:
        jsonschema.validate(line, EventsLine.model_json_schema(by_alias=True))
    for line in lines[:2]:
        jsonschema.validate(line, CloudEvent.model_json_schema(by_alias=True))


def test_a_forged_failed_event_does_not_make_the_workload_failed(tmp_path: Path) -> None:
    forged = Event(type=EventType.FAILED, workload_id="wl-1", source=Source(component="build"),
                   payload=Failed(reason=FailureReason(stage="build", code="x", message="forged")))
    listing = [stored(1, running(), tmp_path), stored(2, forged, None)]
    state, flags = judge(listing, Flagger(load_settings(data_dir=tmp_path)))
    assert (state, flags) == ("workload.running", [None, "unsigned"])
    # signed by the build component (which may report a failure), it counts
    listing[1] = stored(2, forged, tmp_path)
    assert judge(listing, Flagger(load_settings(data_dir=tmp_path)))[0] == "failed"


def test_status_exits_1_when_the_kbs_had_the_last_word_and_refused() -> None:
    assert [status_exit_code(s) for s in ("failed", "key.denied", "attestation.rejected")] == [1, 1, 1]
    assert [status_exit_code(s) for s in ("workload.exited", "key.released", "workload.running")] == [0, 0, 0]
