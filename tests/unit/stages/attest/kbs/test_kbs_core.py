"""The KBS core without a network: events are stored before any answer, and a failed store
releases nothing (the session is not attested, the key is not returned)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from ccpipe.schemas.envelope import Event
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.appraiser import AppraisalInput, AppraisalOutcome
from ccpipe.stages.attest.kbs.audit import AuditEvents
from ccpipe.stages.attest.kbs.core import KbsCore
from ccpipe.stages.attest.kbs.errors import (
    AuditUnavailable,
    EvidenceRefused,
    MalformedBody,
    NonceInvalid,
    SessionMissing,
    TokenInvalid,
)
from ccpipe.stages.attest.kbs.release import ResourceDecision
from ccpipe.stages.attest.kbs.requirements import requirements_path
from ccpipe.stages.attest.kbs.resources import ResourceReleaser
from ccpipe.stages.attest.kbs.sessions import SessionStore
from ccpipe.stages.attest.kbs.store import FileBackend, FileKek, ResourceStore
from ccpipe.stages.attest.kbs.tokens import TokenBroker


class Trail:
    """An in-memory event store that can be switched off."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.up = True

    async def publish(self, event: Event, msg_id: str) -> None:
        if not self.up:
            raise ConnectionError("nats is down")
        self.events.append(event)


class Appraiser:
    """Accepts evidence b"good", refuses anything else; records what it was asked."""

    def __init__(self) -> None:
        self.seen: list[AppraisalInput] = []

    def appraise(self, req: AppraisalInput) -> AppraisalOutcome:
        self.seen.append(req)
        ok = req.evidence == b"good"
        return AppraisalOutcome(
            ok=ok, tee=req.tee, backend="test", emulated=True, claims={}, ear_status="affirming" if ok else "none",
            trust_vector={}, policy_id="p", policy_digest="sha256:" + "0" * 64, evidence_digest="sha256:" + "1" * 64,
            rejection=None if ok else FailureReason(stage="attest", code="attest.evidence.signature", message="bad"),
        )


class References:
    def register(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        return []

    def get(self, scope: str | None, name: str) -> list[Any]:
        return []

    def scoped(self, scope: str, name: str) -> list[Any]:
        return ["ab" * 32] if name == "init_data_digest" and scope == "wl" else []

    def check(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        return []


class AllowAll:
    def decide(self, claims: dict[str, Any], path: str) -> ResourceDecision:
        return ResourceDecision(True, "allow", "test")

    def set_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        return {}

    def set_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        return {}

    def ids(self) -> list[str]:
        return []

    def check_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        return {}

    def check_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        return {}


@pytest.fixture
async def parts(tmp_path: Path) -> tuple[KbsCore, ResourceReleaser, Trail, Appraiser]:
    trail, appraiser = Trail(), Appraiser()
    sessions, tokens, events = SessionStore(), TokenBroker.for_data_dir(tmp_path), AuditEvents(trail.publish)
    core = KbsCore(sessions=sessions, appraiser=appraiser, tokens=tokens, events=events, references=References())
    store = ResourceStore(FileBackend(tmp_path / "r"), FileKek(tmp_path / "kek"))
    # what the sign stage registers with the key: the workload's [tee] requirements (the test
    # appraiser's evidence is emulated SNP)
    wanted = TeeRequirements(types=[TeeType.SNP], allow_emulated=True)
    await store.set(requirements_path("wl"), wanted.model_dump_json().encode())
    releaser = ResourceReleaser(sessions=sessions, tokens=tokens, store=store, policies=AllowAll(), events=events,
                                allow_emulated=True)
    return core, releaser, trail, appraiser


def _auth() -> bytes:
    return json.dumps({"version": "0.4.0", "tee": "snp", "extra-params": {"ccpipe-workload": "wl"}}).encode()


def _attest(nonce: str, evidence: str = "Z29vZA==") -> bytes:  # base64 of b"good"
    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    return json.dumps({"runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
                       "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}).encode()


async def test_kbs_core_appraisal_gets_the_binding_and_the_workload_initdata(parts: Any) -> None:
    core, releaser, trail, appraiser = parts
    challenge, session = await core.auth(_auth())
    token, attested = await core.attest(session.cookie, _attest(challenge.nonce))
    req = appraiser.seen[0]
    assert req.workload_id == "wl" and req.expected_init_data_digest == bytes.fromhex("ab" * 32)
    assert len(req.expected_report_data) == 48 and req.evidence == b"good"
    assert [e.type.value for e in trail.events] == ["attestation.challenged", "attestation.verified"]
    challenged, verified = trail.events
    assert challenged.payload.nonce == challenge.nonce and challenged.payload.session_id == session.id
    assert verified.payload.challenge_event_id == challenged.id
    assert verified.payload.token_id == core.tokens.verify(token.token)["jti"]
    await releaser.store.set("ccpipe/wl/image-key", b"k")
    await releaser.release("ccpipe/wl/image-key", session_id=attested.cookie, bearer=None)
    assert [e.type.value for e in trail.events][1:] == ["attestation.verified", "key.released"]


async def test_kbs_core_no_token_when_the_verdict_cannot_be_stored(parts: Any) -> None:
    core, releaser, trail, _ = parts
    challenge, session = await core.auth(_auth())
    trail.events.clear()
    trail.up = False
    with pytest.raises(AuditUnavailable):
        await core.attest(session.cookie, _attest(challenge.nonce))
    with pytest.raises(AuditUnavailable):  # even the refusal must be recorded before it is answered
        await releaser.release("ccpipe/wl/image-key", session_id=session.cookie, bearer=None)
    trail.up = True
    with pytest.raises(SessionMissing, match="not passed attestation"):
        await releaser.release("ccpipe/wl/image-key", session_id=session.cookie, bearer=None)
    with pytest.raises(NonceInvalid, match="already used"):  # the failed attempt spent the nonce
        await core.attest(session.cookie, _attest(challenge.nonce))
    assert [e.type.value for e in trail.events] == ["key.denied", "attestation.rejected"]


async def test_kbs_core_no_challenge_when_it_cannot_be_stored(parts: Any) -> None:
    core, _, trail, _ = parts
    trail.up = False
    with pytest.raises(AuditUnavailable):
        await core.auth(_auth())
    assert trail.events == []


async def test_kbs_core_no_key_when_the_release_cannot_be_stored(parts: Any) -> None:
    core, releaser, trail, _ = parts
    await releaser.store.set("ccpipe/wl/image-key", b"k")
    challenge, session = await core.auth(_auth())
    _, attested = await core.attest(session.cookie, _attest(challenge.nonce))
    trail.up = False
    with pytest.raises(AuditUnavailable):
        await releaser.release("ccpipe/wl/image-key", session_id=attested.cookie, bearer=None)


async def test_kbs_core_refused_evidence_is_one_rejection_event(parts: Any) -> None:
    core, _, trail, _ = parts
    challenge, session = await core.auth(_auth())
    with pytest.raises(EvidenceRefused, match="bad"):
        await core.attest(session.cookie, _attest(challenge.nonce, evidence="YmFk"))
    assert [e.type.value for e in trail.events] == ["attestation.challenged", "attestation.rejected"]
    rejected = trail.events[1].payload
    assert rejected.reason.code == "attest.evidence.signature" and rejected.evidence == "YmFk"


async def test_kbs_core_expired_token_in_a_live_session_releases_nothing(parts: Any) -> None:
    core, releaser, trail, _ = parts
    await releaser.store.set("ccpipe/wl/image-key", b"k")
    challenge, session = await core.auth(_auth())
    _, attested = await core.attest(session.cookie, _attest(challenge.nonce))
    attested.token_claims["exp"] = 1  # the token's lifetime ended before the session's
    core.sessions.seal(attested)
    with pytest.raises(TokenInvalid, match="expired"):
        await releaser.release("ccpipe/wl/image-key", session_id=attested.cookie, bearer=None)
    assert [e.type.value for e in trail.events][1:] == ["attestation.verified", "key.denied"]


async def test_kbs_core_attest_body_is_decoded_once_and_odd_json_still_gets_a_clear_answer(parts: Any) -> None:
    core, _, trail, appraiser = parts
    # JSON evidence reaches the appraiser as its compact encoding, carrying the decoded value.
    challenge, session = await core.auth(_auth())
    evidence = {"attestation_report": {"version": 3, "report_data": [1, 2, 3]}, "cert_chain": None}
    body = _attest(challenge.nonce).replace(b'"Z29vZA=="', json.dumps(evidence, indent=2).encode())
    with pytest.raises(EvidenceRefused):
        await core.attest(session.cookie, body)
    seen = appraiser.seen[-1].evidence
    assert seen == json.dumps(evidence, separators=(",", ":")).encode() and seen.decoded == evidence
    # An integer beyond 64 bits is JSON, but not orjson's: pydantic decodes it, and the
    # evidence that cannot be re-encoded is refused by name (one event, no appraisal).
    challenge, session = await core.auth(_auth())
    huge = b'{"attestation_report": {"version": 123456789012345678901234567890}}'
    body = _attest(challenge.nonce).replace(b'"Z29vZA=="', huge)
    with pytest.raises(MalformedBody, match="primary_evidence cannot be encoded"):
        await core.attest(session.cookie, body)
    # Not JSON at all: named as such, and the nonce is spent.
    challenge, session = await core.auth(_auth())
    with pytest.raises(MalformedBody, match="attest body: .*Invalid JSON"):
        await core.attest(session.cookie, b'{"runtime-data": ')
    with pytest.raises(NonceInvalid):
        await core.attest(session.cookie, _attest(challenge.nonce))
    assert len(appraiser.seen) == 1
    assert trail.events[-1].type.value == "attestation.rejected"


async def test_kbs_core_claims_too_large_for_a_cookie_are_a_refusal_not_a_lost_token(parts: Any) -> None:
    core, _, trail, appraiser = parts
    blob = os.urandom(6000).hex()  # incompressible: the sealed session cannot stay under 4000 characters
    original: Callable[[AppraisalInput], AppraisalOutcome] = appraiser.appraise

    def big(req: AppraisalInput) -> AppraisalOutcome:
        return dataclasses.replace(original(req), claims={"fields": {"blob": blob}})

    appraiser.appraise = big
    challenge, session = await core.auth(_auth())
    with pytest.raises(SessionMissing, match="claims are too large"):
        await core.attest(session.cookie, _attest(challenge.nonce))
    # No verified attestation on the trail that nobody received: one rejection naming why.
    assert [e.type.value for e in trail.events] == ["attestation.challenged", "attestation.rejected"]
    assert trail.events[-1].payload.reason.code == "kbs.session.missing"
