"""Nodes join by attesting (issue 19, item 2), against a real nats-server, the embedded KBS and the scheduler.

A node joins with real emulated SEV-SNP evidence binding a fresh nonce and its node key; the
scheduler places work only on nodes with such a record, by the record's TEE facts, and only
while their heartbeats are signed by the recorded key. Each test shows an attack failing next
to the honest case succeeding under the same conditions.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ccpipe.enclave_runner.errors import NodeNotAdmitted
from ccpipe.enclave_runner.join import attest_node, public_node_key
from ccpipe.enclave_runner.node import RunnerNode, join_backend
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.config import Settings
from ccpipe.schemas.events import EventType, NodeAttested, SchedulingPending
from ccpipe.schemas.nodes import (
    CHALLENGE_SUBJECT,
    NODES_WORKLOAD,
    NodeChallenge,
    NodeJoinReply,
    NodeJoinRequest,
    join_report_data,
)
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.service import serve_kbs
from ccpipe.stages.deploy.handler import deploy_stages
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import list_attestations, node_heartbeat
from ccpipe.stages.deploy.scheduler_service import serve_scheduler
from tests.integration.stages.deploy.node_helpers import unique
from tests.integration.stages.deploy.test_deploy_scheduling import events_of, placed, submit

pytestmark = pytest.mark.integration
NOT_PLACED_WITHIN_S = 3.0
"""How long a workload is watched for a placement it must never get (the scheduler decides every 0.2 s)."""


def settings_for(nats_url: str, data_dir: Path, *, allow_emulated: bool = True) -> Settings:
    return load_settings(nats_url=nats_url, data_dir=data_dir, allow_emulated=allow_emulated, max_deliver=3,
                         ack_wait_s=5.0, retry_attempts=2)


@pytest.fixture
async def pipeline(nats_server: Any, data_dir: Path) -> AsyncIterator[Settings]:
    """The embedded KBS (which admits nodes), the ``schedule`` stage and the scheduler service."""
    settings = settings_for(nats_server.url, data_dir)
    eps = Endpoints(nats_url=nats_server.url)
    specs = [s for s in deploy_stages(settings, eps) if s.name == "schedule"]
    async with serve_kbs(settings, eps), run_stages(nats_server.url, settings, specs, instance="admission"), \
            serve_scheduler(settings, eps, interval=0.2):
        yield settings


def claims_hardware_snp(node_id: str) -> NodeAnnouncement:
    """A heartbeat that says: hardware SEV-SNP, a recent TCB, plenty of room."""
    return NodeAnnouncement(node_id=node_id, tee=TeeType.SNP, backend="configfs-tsm", emulated=False,
                            tcb={"snp": 99, "microcode": 999}, capacity=Capacity(total=50, free=50))


async def pending_reason(js: JetStreamContext, wl: str) -> str:
    """The reason of the workload's ``scheduling.pending``, after checking it was never placed."""
    pending = await events_of(js, wl, EventType.SCHEDULING_PENDING)
    assert pending, f"{wl} got no scheduling decision"
    assert await events_of(js, wl, EventType.SCHEDULED, timeout=NOT_PLACED_WITHIN_S) == []
    payload = pending[0].payload
    assert isinstance(payload, SchedulingPending)
    return payload.reason


async def test_a_fake_node_with_no_evidence_never_receives_a_placement(
    js: JetStreamContext, pipeline: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    fake = unique("fake-min")
    caplog.set_level(logging.WARNING, logger="ccpipe.deploy")
    # a TCB component no other node has, so only this node could ever fit
    async with node_heartbeat(js, claims_hardware_snp(fake).model_copy(update={"tcb": {"fake_only": 1}}),
                              sign=Ed25519PrivateKey.generate().sign):
        wl = unique("w")
        await submit(js, wl, {"types": ["snp"], "allow_emulated": False, "min_tcb": {"fake_only": 1}})
        assert fake not in await pending_reason(js, wl)  # not even considered
    assert any(fake in r.getMessage() and "has not attested" in r.getMessage() for r in caplog.records)


async def test_a_heartbeat_signed_by_another_key_is_ignored(
    js: JetStreamContext, nc: NatsClient, pipeline: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    node = RunnerNode(unique("attested"), tee="emulated-snp")
    key = Ed25519PrivateKey.generate()
    record = await attest_node(nc, pipeline.data_dir, node, key)
    assert record.tee == TeeType.SNP and record.emulated
    caplog.set_level(logging.WARNING, logger="ccpipe.deploy")
    announcement = claims_hardware_snp(node.node_id)
    # same node id, same credential, but the heartbeat is signed by a key that was never attested
    async with node_heartbeat(js, announcement, sign=Ed25519PrivateKey.generate().sign):
        wl = unique("w")
        await submit(js, wl, {"types": ["snp"], "allow_emulated": True})
        await pending_reason(js, wl)
    assert any(node.node_id in r.getMessage() and "not signed by the node's attested key" in r.getMessage()
               for r in caplog.records)
    # the heartbeat its attested key signs is admitted, and the waiting workload placed there
    async with node_heartbeat(js, announcement, sign=key.sign):
        got = await events_of(js, wl, EventType.SCHEDULED)
    assert got and placed(got[0]).node_id == node.node_id


async def test_an_emulated_node_gets_no_workload_that_refuses_emulation_whatever_its_heartbeat_claims(
    js: JetStreamContext, nc: NatsClient, pipeline: Settings
) -> None:
    node = RunnerNode(unique("emu"), tee="emulated-snp")
    key = Ed25519PrivateKey.generate()
    await attest_node(nc, pipeline.data_dir, node, key)
    async with node_heartbeat(js, claims_hardware_snp(node.node_id), sign=key.sign):
        strict = unique("w")
        await submit(js, strict, {"types": ["snp"], "allow_emulated": False})
        assert "emulat" in await pending_reason(js, strict)
        relaxed = unique("w")
        await submit(js, relaxed, {"types": ["snp"], "allow_emulated": True})
        got = await events_of(js, relaxed, EventType.SCHEDULED)
    assert got and placed(got[0]).node_id == node.node_id
    assert placed(got[0]).backend == "emulated"  # the verified backend, not the claimed configfs-tsm


async def test_a_join_is_recorded_with_its_event_and_the_verified_facts(
    js: JetStreamContext, nc: NatsClient, pipeline: Settings
) -> None:
    node = RunnerNode(unique("joined"), tee="emulated-tdx")
    key = Ed25519PrivateKey.generate()
    record = await attest_node(nc, pipeline.data_dir, node, key)
    assert (await list_attestations(js, [node.node_id]))[node.node_id] == record
    assert record.tee == TeeType.TDX and record.backend == "emulated" and record.node_key == public_node_key(key)
    assert record.tcb.get("tcb_up_to_date") in (0, 1)  # TDX components, as the KBS compares min_tcb with
    events = [s.event for s in await read_events(js, NODES_WORKLOAD) if s.event and s.event.id == record.event_id]
    assert len(events) == 1 and events[0].type == EventType.NODE_ATTESTED
    assert events[0].subject.node == node.node_id and events[0].source.component == "kbs"
    assert isinstance(events[0].payload, NodeAttested) and events[0].payload.node_key == record.node_key


async def _join(nc: NatsClient, subject: str, request: NodeJoinRequest) -> NodeJoinReply:
    reply = await nc.request(subject, request.model_dump_json().encode(), timeout=15)
    return NodeJoinReply.model_validate_json(reply.data)


async def _evidence_for(nc: NatsClient, settings: Settings, node_id: str, bound_key: str) -> tuple[NodeChallenge, str]:
    """A fresh challenge and base64 evidence for it that binds ``bound_key``."""
    challenge = NodeChallenge.model_validate_json((await nc.request(CHALLENGE_SUBJECT, b"", timeout=15)).data)
    backend = join_backend(settings.data_dir, RunnerNode(node_id, tee="emulated-snp"))
    result = backend.get_evidence(join_report_data(challenge.nonce, node_id, bound_key))
    return challenge, base64.b64encode(result.evidence).decode()


async def test_joins_with_replayed_nonces_or_evidence_for_another_key_are_refused(
    js: JetStreamContext, nc: NatsClient, pipeline: Settings
) -> None:
    node_id = unique("replay")
    honest = public_node_key(Ed25519PrivateKey.generate())
    challenge, evidence = await _evidence_for(nc, pipeline, node_id, honest)
    request = NodeJoinRequest(node_id=node_id, node_key=honest, nonce=challenge.nonce, tee=TeeType.SNP,
                              evidence=evidence)
    # the thief's key with evidence that binds the honest node's key
    thief = public_node_key(Ed25519PrivateKey.generate())
    stolen = await _join(nc, challenge.join_subject, request.model_copy(update={"node_key": thief}))
    assert stolen.record is None and stolen.code == "attest.evidence.report_data", stolen
    challenge, evidence = await _evidence_for(nc, pipeline, node_id, honest)
    request = request.model_copy(update={"nonce": challenge.nonce, "evidence": evidence})
    first = await _join(nc, challenge.join_subject, request)
    assert first.record is not None and first.record.node_key == honest
    replayed = await _join(nc, challenge.join_subject, request)
    assert replayed.record is None and "already used" in (replayed.error or ""), replayed
    made_up = await _join(nc, challenge.join_subject, request.model_copy(update={"nonce": "A" * 43}))
    assert made_up.record is None and "not issued" in (made_up.error or ""), made_up
    assert (await list_attestations(js, [node_id]))[node_id].node_key == honest


async def test_an_installation_that_refuses_emulation_admits_no_emulated_node(
    nats_server: Any, nc: NatsClient, tmp_path: Path
) -> None:
    settings = settings_for(nats_server.url, tmp_path / "strict", allow_emulated=False)
    # the emulated root exists before the KBS's verifier starts, so it knows the evidence is emulated
    # (otherwise the refusal names the unknown chain instead, which depends on start-up order)
    EmulatedSnpBackend(settings.data_dir)
    async with serve_kbs(settings, Endpoints(nats_url=nats_server.url)):
        with pytest.raises(NodeNotAdmitted, match="emulated"):
            await attest_node(nc, settings.data_dir, RunnerNode(unique("emu-refused")), Ed25519PrivateKey.generate())
