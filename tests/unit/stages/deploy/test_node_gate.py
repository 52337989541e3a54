"""Admission of heartbeats (pure): only attested nodes, by their verified facts, with heartbeats their key signed."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.deploy.admission import NodeGate, Refusal, admit
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from tests.attested_nodes import attestation

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def heartbeat(node_id: str, key: Ed25519PrivateKey, *, sent_at: datetime = T0, free: int = 4) -> NodeAnnouncement:
    """A heartbeat claiming hardware SNP with a high TCB, signed as the runner signs it."""
    claimed = NodeAnnouncement(node_id=node_id, tee=TeeType.SNP, backend="configfs-tsm", emulated=False,
                               tcb={"snp": 99}, capacity=Capacity(total=4, free=free), sent_at=sent_at,
                               heartbeat_at=sent_at, ttl_s=3.0)
    message = claimed.signed_message()
    assert message is not None
    signature = base64.urlsafe_b64encode(key.sign(message)).rstrip(b"=").decode()
    return claimed.model_copy(update={"signature": signature})


def test_an_attested_node_is_placed_by_its_verified_facts_not_its_claims() -> None:
    key = Ed25519PrivateKey.generate()
    record = attestation("n1", key, "snp", emulated=True, tcb={"snp": 3})
    admitted = admit(heartbeat("n1", key), record)
    assert isinstance(admitted, NodeAnnouncement)
    assert (admitted.tee, admitted.backend, admitted.emulated, admitted.tcb) == (TeeType.SNP, "emulated", True,
                                                                                 {"snp": 3})
    assert admitted.capacity == Capacity(total=4, free=4)  # capacity and liveness are the heartbeat's


def test_heartbeats_without_a_record_or_the_recorded_key_are_refused() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    record = attestation("n1", key, "snp", emulated=False)
    assert admit(heartbeat("n1", key), None) == Refusal("n1", "the node has not attested (no attestation record)")
    assert admit(heartbeat("n1", other), record) == Refusal(
        "n1", "the heartbeat is not signed by the node's attested key")
    assert admit(heartbeat("n1", key).model_copy(update={"signature": None}), record) == Refusal(
        "n1", "the heartbeat is not signed")
    # the signature covers the capacity: a heartbeat whose capacity was changed after signing is refused
    tampered = heartbeat("n1", key, free=1).model_copy(update={"capacity": Capacity(total=4, free=4)})
    assert isinstance(admit(tampered, record), Refusal)
    # another node's record does not admit this node, even with that node's key
    assert isinstance(admit(heartbeat("n2", key), record), Refusal)


def test_an_older_heartbeat_written_again_is_a_replay() -> None:
    key = Ed25519PrivateKey.generate()
    records = {"n1": attestation("n1", key, "tdx", emulated=False)}
    gate = NodeGate(logging.getLogger("test"))
    assert [n.node_id for n in gate.admit([heartbeat("n1", key, sent_at=T0 + timedelta(seconds=5))], records)] == ["n1"]
    assert gate.admit([heartbeat("n1", key, sent_at=T0 + timedelta(seconds=5))], records)  # the same one, listed again
    assert gate.admit([heartbeat("n1", key, sent_at=T0)], records) == []
    assert gate.counts["n1"] == 1


def test_refusals_are_counted_each_time_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    gate = NodeGate(logging.getLogger("test.gate"), interval_s=60.0, clock=lambda: now[0])
    fake = heartbeat("fake", Ed25519PrivateKey.generate())
    caplog.set_level(logging.WARNING, logger="test.gate")
    for second in range(120):  # two minutes of listings twice a second
        now[0] = second / 2
        assert gate.admit([fake], {}) == []
    assert gate.counts["fake"] == 120
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "ignoring node fake: the node has not attested" in lines[0]
    now[0] = 61.0
    gate.admit([fake], {})
    assert len(caplog.records) == 2 and "(121 heartbeat listing(s) refused)" not in caplog.records[1].getMessage()
    assert "(120 heartbeat listing(s) refused)" in caplog.records[1].getMessage()
