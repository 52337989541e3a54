"""The attest stage against a real nats-server: a ``built`` event's build-runner evidence is
appraised and answered with ``attestation.verified`` or ``attestation.rejected`` (naming the check)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import AttestationRejected, AttestationVerified, Built, EventType
from ccpipe.stages.attest.ear import EarSigner, verify_ear
from ccpipe.stages.attest.handler import attest_stages
from tests.genuine_events import genuine_publisher

pytestmark = pytest.mark.integration


def built_event(workload_id: str, data_dir: Path, *, tamper: bool = False) -> Event:
    """A ``built`` event whose runner evidence (emulated SEV-SNP) binds its provenance."""
    provenance = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": workload_id}],
                  "predicateType": "https://slsa.dev/provenance/v1", "predicate": {"run": workload_id}}
    digest = hashlib.sha384(canonical_json(provenance)).digest()
    evidence = select_backend(data_dir, prefer="emulated-snp").get_evidence(digest.ljust(64, b"\0"))
    raw = evidence.evidence
    if tamper:  # one bit of the launch measurement: the VCEK signature must no longer verify
        doc = json.loads(raw)
        doc["attestation_report"]["measurement"][0] ^= 1
        raw = json.dumps(doc).encode()
    payload = Built(
        image_digest="sha256:" + "ab" * 32, layout="/nonexistent", provenance=provenance,
        provenance_digest="sha384:" + digest.hex(),
        runner_evidence=evidence.to_event_evidence().model_copy(update={"evidence": base64.b64encode(raw).decode()}),
    )
    return Event(type=EventType.BUILT, workload_id=workload_id, source=Source(component="build"), payload=payload)


async def outcome(js: JetStreamContext, workload_id: str, timeout: float = 30.0) -> Event:
    """The first attestation event of the workload."""
    wanted = (EventType.ATTESTATION_VERIFIED, EventType.ATTESTATION_REJECTED)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = [s.event for s in await read_events(js, workload_id) if s.event and s.event.type in wanted]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no attestation event for {workload_id}")


async def run_one(nats: EmbeddedNats, js: JetStreamContext, data_dir: Path, event: Event, *,
                  allow_emulated: bool) -> Event:
    settings = load_settings(data_dir=data_dir, allow_emulated=allow_emulated, max_deliver=2, ack_wait_s=5.0)
    async with run_stages(nats.url, settings, attest_stages(settings, Endpoints(nats_url=nats.url))):
        await genuine_publisher(js, data_dir).publish(event)
        return await outcome(js, event.workload_id)


async def test_valid_emulated_evidence_is_verified(nats_server: EmbeddedNats, js: JetStreamContext,
                                                   workload_id: str, tmp_path: Path) -> None:
    src = built_event(workload_id, tmp_path)
    out = await run_one(nats_server, js, tmp_path, src, allow_emulated=True)
    assert out.type == EventType.ATTESTATION_VERIFIED and out.causation_id == src.id
    payload = out.payload
    assert isinstance(payload, AttestationVerified)
    assert payload.purpose == "build-runner" and payload.emulated and payload.tee.value == "snp"
    assert payload.trust_vector is not None and payload.trust_vector["executables"] == 3
    assert payload.policy_digest is not None and payload.policy_digest.startswith("sha256:")
    assert isinstance(src.payload, Built)
    assert payload.evidence == src.payload.runner_evidence.evidence  # kept for re-verification
    # the token is the attestation service's, signed with the key under the data directory
    claims = verify_ear(payload.ear_token or "", EarSigner.load_or_create(tmp_path / "keys" / "attest"))
    assert claims["submods"]["cpu0"]["ear.status"] == payload.ear_status


async def test_tampered_evidence_is_rejected_naming_the_check(nats_server: EmbeddedNats, js: JetStreamContext,
                                                              workload_id: str, tmp_path: Path) -> None:
    out = await run_one(nats_server, js, tmp_path, built_event(workload_id, tmp_path, tamper=True),
                        allow_emulated=True)
    assert out.type == EventType.ATTESTATION_REJECTED
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.evidence.signature" and out.payload.purpose == "build-runner"
    assert out.payload.evidence_digest is not None


async def test_emulated_evidence_is_rejected_when_not_allowed(nats_server: EmbeddedNats, js: JetStreamContext,
                                                              workload_id: str, tmp_path: Path) -> None:
    out = await run_one(nats_server, js, tmp_path, built_event(workload_id, tmp_path), allow_emulated=False)
    assert out.type == EventType.ATTESTATION_REJECTED
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.evidence.emulated"


async def test_provenance_swapped_after_the_build_is_rejected(nats_server: EmbeddedNats, js: JetStreamContext,
                                                              workload_id: str, tmp_path: Path) -> None:
    event = built_event(workload_id, tmp_path)
    assert isinstance(event.payload, Built)
    forged = event.payload.model_copy(update={"provenance": {**event.payload.provenance, "predicate": {"run": "x"}}})
    event = event.model_copy(update={"payload": forged})
    out = await run_one(nats_server, js, tmp_path, event, allow_emulated=True)
    assert out.type == EventType.ATTESTATION_REJECTED
    assert isinstance(out.payload, AttestationRejected)
    assert out.payload.reason.code == "attest.evidence.report_data"
