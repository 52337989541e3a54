"""Request parameters: what the API accepts and how it refuses the rest (always naming it)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from ccpipe.pipeline.audit.http import params
from ccpipe.pipeline.audit.http.errors import BadRequest
from ccpipe.pipeline.audit.query import MAX_LIMIT, EventFilter

DIGEST = "sha256:" + "ab" * 32
COMMIT = "c0ffee" + "0" * 34


def test_no_parameters_is_the_default_filter() -> None:
    assert params.event_filter({}) == EventFilter()


def test_every_filter_parameter_is_carried_over() -> None:
    f = params.event_filter({
        "workload_id": "hello-1", "commit": COMMIT, "image_digest": DIGEST, "key_resource": "kbs:///r/t/tag",
        "node_id": "node-7", "tee": "snp", "backend": "configfs-tsm", "event_type": "key.released",
        "verdict": "affirming", "since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00+01:00",
        "limit": "50", "after_seq": "1234",
    })
    assert f == EventFilter(workload_id="hello-1", commit=COMMIT, image_digest=DIGEST, key_resource="kbs:///r/t/tag",
                            node_id="node-7", tee="snp", backend="configfs-tsm", event_type="key.released",
                            verdict="affirming", since=datetime(2026, 11, 1, tzinfo=UTC),
                            until=datetime(2026, 11, 1, 23, tzinfo=UTC), limit=50, after_seq=1234)


def test_since_equal_to_until_is_an_empty_interval() -> None:
    at = "2026-11-01T00:00:00Z"
    f = params.event_filter({"since": at, "until": at})
    assert f.since == f.until == datetime(2026, 11, 1, tzinfo=UTC)


def test_empty_and_repeated_parameters_are_refused() -> None:
    with pytest.raises(BadRequest, match="query parameter limit is empty"):
        params.event_filter({"workload_id": "hello-1", "limit": ""})
    with pytest.raises(BadRequest, match="query parameter limit is given more than once"):
        params.event_filter(MultiDict([("limit", "1"), ("limit", "2")]))
    assert params.single_values({"search": ""}, ("search",), may_be_empty=("search",)) == {"search": ""}


@pytest.mark.parametrize(("query", "message"), [
    ({"image": DIGEST}, "unknown query parameter(s) image"),
    ({"image_digest": "sha256:" + "AB" * 32}, "is not a digest"),
    ({"image_digest": "sha256:" + "ab" * 31}, "is not a digest"),
    ({"image_digest": "sha384:" + "ab" * 32}, "is not a digest"),  # sha384 has 96 hex digits
    ({"image_digest": "md5:" + "ab" * 16}, "is not a digest"),
    ({"commit": COMMIT[:12]}, "is not a full commit id"),
    ({"workload_id": "Hello"}, "workload id 'Hello'"),
    ({"workload_id": "a" * 129}, "at most 128"),
    ({"key_resource": "just-a-name"}, "repo/type/tag"),
    ({"key_resource": "r/t/../x"}, "repo/type/tag"),
    ({"tee": "sev"}, "tee 'sev' is not one of snp, tdx, sgx, sample"),
    ({"event_type": "key.stolen"}, "event_type 'key.stolen'"),
    ({"node_id": "node 1"}, "node_id 'node 1'"),
    ({"limit": "0"}, f"limit 0 is not between 1 and {MAX_LIMIT}"),
    ({"limit": str(MAX_LIMIT + 1)}, "is not between"),
    ({"limit": "-5"}, "is not a non-negative decimal integer"),
    ({"after_seq": "1e3"}, "is not a non-negative decimal integer"),
    ({"after_seq": "9" * 25}, "after_seq 9999999999999999999999999 is not between 0 and 9223372036854775807"),
    ({"limit": "0" * 30 + "7" * 60}, "limit " + "7" * 40 + "… is not between 1 and"),
    ({"since": "2026-11-01"}, "with a zone"),
    ({"until": "tomorrow"}, "RFC 3339"),
    ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "is after until"),
])
def test_malformed_parameters_are_refused_by_name(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        params.event_filter(query)
    assert message in info.value.message
    assert info.value.code == "audit.api.bad_request" and info.value.hint


@pytest.mark.parametrize("value", ["sha256:" + "0" * 64, "sha384:" + "1" * 96, "sha512:" + "f" * 128])
def test_digests_of_each_algorithm(value: str) -> None:
    assert params.digest(value) == value


@pytest.mark.parametrize("value", ["01a203cc-c361-7b1c-ae5c-91fe4512ecbc", "01ARZ3NDEKTSV4RRFFQ69G5FAV"])
def test_event_ids_uuid_and_ulid(value: str) -> None:
    assert params.event_id(value) == value


@pytest.mark.parametrize("value", ["", "../etc", "a b", "<script>", "x" * 65])
def test_event_ids_that_are_not_ids(value: str) -> None:
    with pytest.raises(BadRequest, match="is not a UUID or ULID"):
        params.event_id(value)


def test_overview_filter() -> None:
    f = params.overview_filter({"state": "denied", "tee": "tdx", "node_id": "node-9", "limit": "5",
                                "since": "2026-11-01T00:00:00Z"})
    assert (f.state, f.tee, f.node_id, f.limit) == ("denied", "tdx", "node-9", 5)
    assert f.since == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(BadRequest, match="state 'lost' is not one of in_progress, running"):
        params.overview_filter({"state": "lost"})
    with pytest.raises(BadRequest, match="limit 201 is not between 1 and 200"):
        params.overview_filter({"limit": "201"})
