"""The audit HTTP API over a real trail, served by ``serve_audit_api`` on loopback.

Answers are checked against the events that were logged, proofs with the stdlib offline
verifier (no ccpipe code on the checking side), and every JSON body against the schema the
OpenAPI document declares for it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from ccpipe.pipeline.audit.checkpoint import NoteVerifier
from ccpipe.pipeline.audit.errors import InconsistencyError
from ccpipe.pipeline.audit.http.openapi import openapi_document
from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.liveness import AuditState, AuditStatus, status_path, write_status
from ccpipe.pipeline.audit.offline import OfflineProofError, verify_proof_offline
from ccpipe.pipeline.audit.proofs import check_consistency
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas.cloudevents import cloudevent_type
from ccpipe.schemas.events import EventType
from tests.audit_journeys import Names, journey
from tests.unit.pipeline.audit.http.audit_http_trail import DENIED, FAILED_WL, Trail, build_trail, demo_names

pytestmark = pytest.mark.integration


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    return build_trail(tmp_path / "data")


class Api:
    """A client of one served API that checks every JSON body against the OpenAPI document."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def get(self, path: str, schema: str | None = None, status: int = 200) -> Any:
        async with self.session.get(self.base + path) as resp:
            body = await resp.read()
            assert resp.status == status, body
            if resp.content_type != "application/json":
                return body
            doc = json.loads(body)
            name = schema or ("ErrorBody" if status >= 400 else None)
            if name:
                root = {"$ref": f"#/components/schemas/{name}", "components": openapi_document()["components"]}
                Draft202012Validator(root).validate(doc)
            return doc


@pytest.fixture
async def api(trail: Trail) -> AsyncIterator[Api]:
    eps = Endpoints(nats_url="nats://127.0.0.1:4222", registry="127.0.0.1:5000")
    async with serve_audit_api(trail.settings, eps) as served, aiohttp.ClientSession() as session:
        assert served.registry == "127.0.0.1:5000"  # the other endpoints pass through
        assert served.audit_api_url is not None and served.audit_api_url.startswith("http://127.0.0.1:")
        yield Api(served.audit_api_url, session)


async def test_journey_lists_the_workload_events_in_order_with_its_stages(api: Api, trail: Trail) -> None:
    wl = demo_names().workload_id
    j = await api.get(f"/api/v1/workloads/{wl}/journey", "Journey")
    assert [e["event_id"] for e in j["events"]] == [e.id for e in trail.events[wl]]
    assert [s["stage"] for s in j["stages"]] == ["commit", "build", "provenance", "signature", "push", "placement",
                                                 "attestation", "key_release", "run"]
    assert all(s["status"] == "done" for s in j["stages"])
    assert {e["signature"] for e in j["events"]} == {"valid"}


async def test_events_page_through_the_whole_trail_once(api: Api, trail: Trail) -> None:
    seen: list[str] = []
    after = 0
    while True:
        page = await api.get(f"/api/v1/events?limit=4&after_seq={after}", "EventPage")
        seen += [e["event_id"] for e in page["events"]]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert seen == [e.id for batch in trail.events.values() for e in batch]


async def test_event_filters_narrow_the_listing(api: Api, trail: Trail) -> None:
    n = demo_names()
    by_type = await api.get("/api/v1/events?event_type=key.denied", "EventPage")
    assert [e["workload_id"] for e in by_type["events"]] == [Names(DENIED).workload_id]
    failed = await api.get("/api/v1/events?verdict=failed", "EventPage")
    assert [e["workload_id"] for e in failed["events"]] == [FAILED_WL]
    by_commit = await api.get(f"/api/v1/events?commit={n.commit}&workload_id={n.workload_id}", "EventPage")
    assert len(by_commit["events"]) == len(trail.events[n.workload_id])
    window = await api.get("/api/v1/events?since=2026-11-01T00:00:04Z&until=2026-11-01T00:00:05Z", "EventPage")
    assert [e["type"] for e in window["events"]] == ["attestation.verified", "key.released", "key.released",
                                                     "enclave.launched"]


async def test_key_recipients_and_image_runs(api: Api) -> None:
    n = demo_names()
    rec = await api.get(f"/api/v1/keys/{n.key}/recipients", "KeyRecipients")
    assert [(e["type"], e["fields"]["node_id"]) for e in rec["releases"]] == [("key.released", n.node)]
    nobody = await api.get("/api/v1/keys/ccpipe/image-key/nobody/recipients", "KeyRecipients")
    assert nobody["releases"] == []
    runs = await api.get(f"/api/v1/images/{n.image}/runs", "ImageRuns")
    assert runs["workloads"] == [n.workload_id]
    assert {e["type"] for e in runs["events"]} >= {"scheduled", "workload.running", "workload.exited"}


async def test_event_detail_carries_the_logged_bytes(api: Api, trail: Trail) -> None:
    event = trail.events[demo_names().workload_id][6]
    got = await api.get(f"/api/v1/events/{event.id}", "EventDetail")
    assert base64.b64decode(got["raw"]) == event.canonical_bytes()
    # the logged bytes are the CloudEvent; the summary names ccpipe's type
    assert got["canonical"]["type"] == cloudevent_type(event.type) and got["event"]["type"] == event.type.value


async def test_proof_verifies_offline_against_the_signed_checkpoint(api: Api, trail: Trail) -> None:
    for event in trail.events[demo_names().workload_id]:
        doc = await api.get(f"/api/v1/events/{event.id}/proof", "ProofDocument")
        assert set(doc) == {"event_id", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint",
                            "log_public_key"}
        assert doc["log_public_key"] == trail.signer.verifier.vkey
        ok = verify_proof_offline(doc)
        assert ok.event_id == event.id and ok.tree_size == 21


async def test_proof_of_a_tampered_leaf_does_not_verify(api: Api, trail: Trail) -> None:
    event = next(e for e in trail.events[demo_names().workload_id] if e.type is EventType.KEY_RELEASED)
    trail.tamper_leaf(event.id, b'"node_id":"node-001"', b'"node_id":"node-666"')
    doc = await api.get(f"/api/v1/events/{event.id}/proof", "ProofDocument")
    assert b"node-666" in base64.b64decode(doc["leaf"])  # the API serves what the log holds…
    with pytest.raises(OfflineProofError):
        verify_proof_offline(doc)  # …and the proof exposes it


async def test_checkpoint_and_consistency_between_two_checkpoints(api: Api, trail: Trail) -> None:
    first = await api.get("/api/v1/checkpoint")
    assert first.decode().startswith("ccpipe-audit\n21\n")
    # More events arrive and the log signs again.
    store = trail.store()
    try:
        more = journey(5)
        ingest = Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir)))
        ingest.ingest([StreamMessage(22 + i, e.canonical_bytes(), None) for i, e in enumerate(more)])
        publish_checkpoint(store, trail.signer)
    finally:
        store.close()
    second = await api.get("/api/v1/checkpoint")
    assert second.decode().startswith("ccpipe-audit\n31\n")
    c = await api.get("/api/v1/consistency?from=21", "ConsistencyProof")
    assert (c["from_size"], c["to_size"]) == (21, 31)
    assert c["from_checkpoint"].encode() == first and c["to_checkpoint"].encode() == second
    keys = [NoteVerifier.from_vkey(c["log_public_key"])]
    proof = [bytes.fromhex(h) for h in c["proof"]]
    old, new = check_consistency(first, second, proof, keys)
    assert (old.size, new.size) == (21, 31)
    with pytest.raises(InconsistencyError):
        check_consistency(first, second, [bytes(32), *proof[1:]], keys)
    # An event after the newest checkpoint would need a larger tree: no proof yet.
    assert (await api.get("/api/v1/consistency?from=3&to=31", "ConsistencyProof"))["to_checkpoint"] is not None


async def test_event_logged_after_the_latest_checkpoint_is_not_covered_yet(api: Api, trail: Trail) -> None:
    late = journey(7)[0]
    store = trail.store()
    try:
        Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir))).ingest(
            [StreamMessage(22, late.canonical_bytes(), None)])
    finally:
        store.close()
    err = await api.get(f"/api/v1/events/{late.id}/proof", status=409)
    assert err["error"]["code"] == "audit.proof.not_covered" and late.id in err["error"]["message"]
    # …but it is indexed, flagged as unsigned.
    assert (await api.get(f"/api/v1/events/{late.id}", "EventDetail"))["event"]["signature"] == "unsigned"


@pytest.mark.parametrize(("path", "status", "code", "names"), [
    ("/api/v1/events/01a203cc-0000-7000-8000-000000000000", 404, "audit.api.not_found",
     "event 01a203cc-0000-7000-8000-000000000000 is not in the trail"),
    ("/api/v1/events/01a203cc-0000-7000-8000-000000000000/proof", 404, "audit.api.not_found",
     "01a203cc-0000-7000-8000-000000000000"),
    ("/api/v1/events/not%20an%20id", 400, "audit.api.bad_request", "is not a UUID or ULID"),
    ("/api/v1/images/sha256:1234/runs", 400, "audit.api.bad_request", "'sha256:1234' is not a digest"),
    ("/api/v1/images/sha256:" + "A" * 64 + "/runs", 400, "audit.api.bad_request", "is not a digest"),
    ("/api/v1/workloads/Bad_Id/journey", 400, "audit.api.bad_request", "workload id 'Bad_Id'"),
    ("/api/v1/workloads/no-such-workload/journey", 404, "audit.api.not_found", "no-such-workload"),
    ("/api/v1/keys/only-one-part/recipients", 400, "audit.api.bad_request", "repo/type/tag"),
    ("/api/v1/events?limit=0", 400, "audit.api.bad_request", "limit 0 is not between 1 and"),
    ("/api/v1/events?imagedigest=sha256:x", 400, "audit.api.bad_request", "unknown query parameter(s) imagedigest"),
    ("/api/v1/events?event_type=key.stolen", 400, "audit.api.bad_request", "event_type 'key.stolen'"),
    ("/api/v1/events?since=yesterday", 400, "audit.api.bad_request", "RFC 3339"),
    ("/api/v1/events?since=2026-11-01T00:00:00", 400, "audit.api.bad_request", "with a zone"),
    ("/api/v1/consistency", 400, "audit.api.bad_request", "needs from="),
    ("/api/v1/consistency?from=5&to=4", 400, "audit.api.bad_request", "from must not be larger than to"),
    ("/api/v1/consistency?from=1&to=22", 409, "audit.proof.not_covered", "not yet covered by a checkpoint"),
    ("/api/v1/consistency?from=1&from=2", 400, "audit.api.bad_request", "from is given more than once"),
    ("/api/v1/events?limit=", 400, "audit.api.bad_request", "limit is empty"),
    ("/api/v1/workloads?limit=1&limit=2", 400, "audit.api.bad_request", "limit is given more than once"),
    ("/api/v1/nothing-here", 404, "audit.api.not_found", "/api/v1/nothing-here"),
    # The largest index the database stores: once a 500 (SQLite overflowed on index + 1).
    ("/api/v1/leaves/9223372036854775807/proof", 404, "audit.api.not_found",
     "leaf 9223372036854775807 is not in the log"),
    ("/api/v1/leaves/9223372036854775808/proof", 400, "audit.api.bad_request",
     "leaf index 9223372036854775808 is not between 0 and 9223372036854775807"),
    ("/api/v1/leaves/" + "9" * 300 + "/proof", 400, "audit.api.bad_request", "is not between 0 and"),
])
async def test_bad_requests_get_an_error_that_names_the_problem(
        api: Api, path: str, status: int, code: str, names: str) -> None:
    err = await api.get(path, status=status)
    assert err["error"]["code"] == code
    assert names in err["error"]["message"]
    assert err["error"]["hint"]


async def test_the_api_is_read_only(api: Api) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        async with api.session.request(method, api.base + "/api/v1/events") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "audit.api.method_not_allowed"


async def test_page_assets_are_served_with_a_strict_content_security_policy(api: Api) -> None:
    assets = [("/", "text/html"), ("/static/verify.js", "text/javascript"), ("/static/app.js", "text/javascript"),
              ("/static/style.css", "text/css")]
    for path, kind in assets:
        async with api.session.get(api.base + path) as resp:
            assert resp.status == 200 and resp.content_type == kind
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = (await api.get("/")).decode()
    assert "<script>" not in page and "http://" not in page and "https://" not in page  # nothing inline or remote
    await api.get("/static/../../query.py", status=404)


async def test_openapi_document_is_served_and_covers_every_route(api: Api) -> None:
    from openapi_spec_validator import validate

    doc = await api.get("/openapi.json")
    validate(doc)
    documented = set(doc["paths"])
    served = {r.resource.canonical for r in _routes() if r.resource is not None and r.method == "GET"}
    assert served - {"/static/{name}"} == documented


def _routes() -> list[Any]:
    from ccpipe.pipeline.audit.http.app import ReaderThread, audit_app

    app = audit_app(ReaderThread(lambda: None), ReaderThread(lambda: None))  # type: ignore[arg-type,return-value]
    return list(app.router.routes())


async def test_api_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    trail = build_trail(tmp_path / "data", checkpoint=False)
    event = trail.events[demo_names().workload_id][0]
    async with serve_audit_api(trail.settings, Endpoints(nats_url="nats://127.0.0.1:4222")) as eps, \
            aiohttp.ClientSession() as session:
        api = Api(str(eps.audit_api_url), session)
        err = await api.get("/api/v1/checkpoint", status=404)
        assert "has not published a checkpoint" in err["error"]["message"]
        await api.get(f"/api/v1/events/{event.id}/proof", status=404)
        err = await api.get("/api/v1/consistency?from=1", status=404)
        assert "has not published a checkpoint" in err["error"]["message"]
        assert (await api.get(f"/api/v1/events/{event.id}", "EventDetail"))["event"]["type"] == EventType.SUBMITTED


def _log_junk(trail: Trail, data: bytes) -> None:
    store = trail.store()
    try:
        Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir))).ingest(
            [StreamMessage(store.size() + 1, data, None)])
        publish_checkpoint(store, trail.signer)
    finally:
        store.close()


async def test_a_logged_message_without_an_event_id_is_proven_by_leaf_index(api: Api, trail: Trail) -> None:
    wl = demo_names().workload_id
    _log_junk(trail, json.dumps({"workload_id": wl, "type": "key.released", "payload": {}}).encode())
    j = await api.get(f"/api/v1/workloads/{wl}/journey", "Journey")
    junk = j["events"][-1]
    assert (junk["type"], junk["event_id"], junk["links"]["event"]) == ("invalid", "", None)
    assert junk["links"]["proof"] == f"/api/v1/leaves/{junk['leaf_index']}/proof"
    doc = await api.get(junk["links"]["proof"], "ProofDocument")
    assert doc["event_id"] is None and doc["leaf_index"] == 21
    assert verify_proof_offline(doc).tree_size == 22
    err = await api.get("/api/v1/leaves/22/proof", status=404)
    assert err["error"]["message"] == "leaf 22 is not in the log: it holds 22 leaves (indexes 0 to 21)"


async def test_readyz_follows_the_audit_service_status(api: Api, trail: Trail) -> None:
    path = status_path(trail.settings.data_dir)
    err = await api.get("/readyz", "ServiceStatus", status=503)
    assert err["state"] == "degraded" and "no audit service has written" in err["reason"]
    write_status(path, AuditStatus(AuditState.LEADING, holder="h:1:a", logged_seq=40, stream_last_seq=42))
    ok = await api.get("/readyz", "ServiceStatus")
    assert (ok["state"], ok["lag"]) == ("leading", 2)
    write_status(path, AuditStatus(AuditState.DEGRADED, "stream CCPIPE_EVENTS is missing", logged_seq=40))
    down = await api.get("/readyz", "ServiceStatus", status=503)
    assert down["reason"] == "stream CCPIPE_EVENTS is missing" and down["lag"] is None
