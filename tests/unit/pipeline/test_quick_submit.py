"""The submit path without models agrees with the models: spec, event bytes, settings, constants."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ccpipe.pipeline.bus import EVENTS_STREAM
from ccpipe.pipeline.quick_submit import (
    EVENTS_STREAM as QUICK_EVENTS_STREAM,
)
from ccpipe.pipeline.quick_submit import (
    SETTINGS_FIELDS,
    read_submit_settings,
)
from ccpipe.pipeline.trigger import uuid7
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.cloudevent_wire import SUBMITTED_CLOUDEVENT_TYPE, submitted_cloudevent
from ccpipe.schemas.cloudevents import CLOUDEVENT_TYPES
from ccpipe.schemas.config import Settings
from ccpipe.schemas.digest import SHA256_ONLY, digest_pattern
from ccpipe.schemas.envelope import Event, Source, Subject
from ccpipe.schemas.events import EventType, Submitted
from ccpipe.schemas.spec_rules import SHA256_DIGEST_RE, plain_spec
from ccpipe.schemas.workload import WorkloadSpec

text = st.text(st.sampled_from("ab0/-.:@_ \\\n"), max_size=8)
maybe_text = st.one_of(text, st.sampled_from(["scratch", "oci:base", "r/x@sha256:" + "a" * 64, "0755", "1:2",
                                              "/app", "app/", "snp", "tdx", "sgx", "sample", "hello"]))
scalar = st.one_of(maybe_text, st.booleans(), st.integers(-3, 2**60), st.floats(allow_nan=False), st.none())
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(maybe_text, inner, max_size=3),
                     max_leaves=6)


def table(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of some of ``fields`` (well-typed values mostly), now and then an unknown key or a bad value."""
    return st.fixed_dictionaries({}, optional={**fields, "extra": value})


copy = table({"src": maybe_text, "dst": maybe_text, "mode": maybe_text, "owner": maybe_text})
spec = st.fixed_dictionaries({}, optional={
    "workload": table({"name": maybe_text}),
    "build": table({"base": maybe_text, "entrypoint": st.lists(text, max_size=2), "cmd": st.lists(text, max_size=2),
                    "env": st.dictionaries(text, text, max_size=2), "workdir": maybe_text, "user": maybe_text,
                    "labels": st.dictionaries(text, maybe_text, max_size=2), "copy": st.lists(copy, max_size=2)}),
    "tee": table({"types": st.lists(maybe_text, max_size=3), "allow_emulated": st.one_of(st.booleans(), scalar),
                  "min_tcb": st.dictionaries(text, st.one_of(st.integers(-2**54, 2**54), st.booleans()), max_size=2)}),
    "release": table({"policy": maybe_text}),
    "run": table({"network": st.one_of(st.booleans(), scalar)}),
    "other": value,
})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(spec)
def test_plain_spec_is_the_models_dump_or_declines(data: dict[str, Any]) -> None:
    plain = plain_spec(data)
    if plain is None:
        return
    model = WorkloadSpec.model_validate(data)  # must not raise: plain_spec only takes what the model takes
    assert plain == model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_plain_spec_takes_the_demo_spec() -> None:
    data = {"workload": {"name": "hello"},
            "build": {"base": "oci:base:busybox", "entrypoint": ["/app/hello.sh"],
                      "copy": [{"src": "app/", "dst": "/app/", "mode": "0755"}]},
            "tee": {"types": ["snp"], "allow_emulated": True}}
    assert plain_spec(data) == WorkloadSpec.model_validate(data).model_dump(mode="json", by_alias=True,
                                                                           exclude_none=True)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(pusher=st.text(max_size=12), repo=st.text(max_size=12), ref=st.text(max_size=12),
       commit=st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
       moment=st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.just(UTC)))
def test_the_submitted_cloudevent_has_the_models_canonical_bytes(pusher: str, repo: str, ref: str, commit: str,
                                                                 moment: datetime) -> None:
    spec_model = WorkloadSpec.model_validate({"workload": {"name": "hello"}, "tee": {"types": ["snp"]}})
    spec_json = spec_model.model_dump(mode="json", by_alias=True, exclude_none=True)
    event_id = str(uuid7())
    event = Event(id=event_id, type=EventType.SUBMITTED, workload_id="hello-0123456789", occurred_at=moment,
                  source=Source(component="submit", instance=pusher), subject=Subject(commit=commit),
                  payload=Submitted(repo=repo, ref=ref, old_commit="0" * 40, new_commit=commit, pusher=pusher,
                                    spec=spec_model))
    plain = submitted_cloudevent(event_id=event_id, workload_id="hello-0123456789", occurred_at=moment,
                                 pusher=pusher, payload={"repo": repo, "ref": ref, "old_commit": "0" * 40,
                                                         "new_commit": commit, "pusher": pusher, "spec": spec_json})
    assert plain is not None
    assert canonical_json(plain) == event.canonical_bytes()


env_value = st.one_of(st.text(st.sampled_from("ab/:,. 0"), max_size=12),
                      st.sampled_from(["nats://a:4222", " nats://a:1 , tls://b:2 ,", "ws://x", "http://x", "/tmp/x"]))
env_name = st.sampled_from(["CCPIPE_DATA_DIR", "ccpipe_data_dir", "CCPIPE_NATS_URL", "CCPIPE_NATS_CREDS",
                            "CCPIPE_NATS_CREDS_DIR", "CCPIPE_NATS_CA", "CCPIPE_MAX_DELIVER", "CCPIPE_OTLP_ENDPOINT",
                            "CCPIPE_METRICS_PORT", "CCPIPE_KBS_KEK_FILE", "OTHER"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(env_name, env_value, max_size=4))
def test_submit_settings_are_what_the_settings_model_reads(environ: dict[str, str]) -> None:
    quick = read_submit_settings(environ)
    if quick is None:
        return
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.lower().startswith("ccpipe_")]:
            mp.delenv(name)
        for name, v in environ.items():
            mp.setenv(name, v)
        try:
            model = Settings()
        except ValidationError as exc:  # the quick reader took what the model refuses
            raise AssertionError(f"{environ} refused by Settings: {exc}") from exc
    assert (quick.data_dir, quick.nats_url, quick.nats_creds, quick.nats_creds_dir) == (
        model.data_dir, model.nats_url, model.nats_creds, model.nats_creds_dir)
    assert model.otlp_endpoint is None and model.metrics_port is None  # telemetry on: the full path runs


def test_the_copied_constants_match_their_sources() -> None:
    assert set(Settings.model_fields) == SETTINGS_FIELDS
    assert QUICK_EVENTS_STREAM == EVENTS_STREAM
    assert CLOUDEVENT_TYPES[EventType.SUBMITTED] == SUBMITTED_CLOUDEVENT_TYPE
    assert SHA256_DIGEST_RE.pattern == digest_pattern(SHA256_ONLY)


def test_uuid7_is_a_version_7_uuid_of_now() -> None:
    u = uuid7()
    assert u.version == 7 and u.variant == "specified in RFC 4122"
    assert abs((u.int >> 80) - datetime.now(UTC).timestamp() * 1000) < 5000

