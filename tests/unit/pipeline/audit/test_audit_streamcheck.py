"""``audit verify`` over the stream: a deleted, altered, reordered or inserted message is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.audit.streamcheck import verify_stream
from ccpipe.pipeline.audit.verify import Damage
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.pipeline.event_trust import SignatureVerdict
from tests.audit_journeys import Signers, signed_messages


@pytest.fixture
def logged(tmp_path: Path) -> tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]:
    signers = Signers()
    log_key = NoteSigner.generate("test-log")
    signers.keyring.add_log_key(log_key.verifier)
    signers.keyring.save(tmp_path / "keyring.json")
    msgs = [StreamMessage(i + 1, d, s) for i, (d, s) in enumerate(signed_messages(signers, 0, 6))]
    store = SqliteAudit(tmp_path / "log.sqlite")
    ing = Ingestor(store, KeyringFile(tmp_path / "keyring.json"))
    notes = []
    for part in (msgs[:25], msgs[25:]):
        ing.ingest(part)
        notes.append(publish_checkpoint(store, log_key))
    return msgs, notes, signers, store


def renumber(msgs: list[StreamMessage]) -> list[StreamMessage]:
    """What a rogue rewrite of the stream that hides its traces in the sequence numbers looks like."""
    return [StreamMessage(i + 1, m.data, m.signature) for i, m in enumerate(msgs)]


def test_an_untouched_stream_verifies(logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]) -> None:
    msgs, notes, signers, store = logged
    report = verify_stream(msgs, notes, signers.keyring, store)
    assert report.ok and not report.flags and report.leaves_checked == len(msgs)


def test_a_deleted_message_leaves_a_sequence_gap(
        logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]) -> None:
    msgs, notes, signers, store = logged
    report = verify_stream(msgs[:30] + msgs[31:], notes, signers.keyring, store)
    assert report.finding is not None and (report.finding.index, report.finding.damage) == (30, Damage.DELETED)
    assert "31–31" in report.finding.detail


@pytest.mark.parametrize(("damage", "index"), [("deleted", 30), ("modified", 34), ("reordered", 40),
                                               ("inserted", 44)])
def test_a_renumbered_rewrite_is_named(logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit],
                                       damage: str, index: int) -> None:
    msgs, notes, signers, store = logged
    forged = list(msgs)
    if damage == "deleted":
        del forged[index]
    elif damage == "modified":
        m = forged[index]
        assert b"node-003" in m.data  # a scheduled event: rewritten to name another node
        forged[index] = StreamMessage(m.seq, m.data.replace(b"node-003", b"node-299"), m.signature)
    elif damage == "reordered":
        forged[index], forged[index + 1] = forged[index + 1], forged[index]
    else:
        extra = ComponentKey.generate("attest")
        data = msgs[6].data.replace(b"node-000", b"node-299")
        forged.insert(index, StreamMessage(0, data, signature_header(extra, data)))
    report = verify_stream(renumber(forged), notes, signers.keyring, store)
    assert report.finding is not None
    assert (report.finding.damage.value, report.finding.index) == (damage, index), report.finding.detail
    if damage == "modified":
        assert [(f.index, f.check.verdict) for f in report.flags] == [(index, SignatureVerdict.BAD_SIGNATURE)]


def test_a_truncated_stream_is_named(logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]) -> None:
    msgs, notes, signers, store = logged
    report = verify_stream(msgs[:50], notes, signers.keyring, store)
    assert report.finding is not None and (report.finding.damage, report.finding.index) == (Damage.DELETED, 50)


def test_without_the_store_the_damage_is_still_detected(
        logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]) -> None:
    msgs, notes, signers, _ = logged
    forged = list(msgs)
    assert b"alice" in forged[10].data  # a submitted event: the pusher is rewritten
    forged[10] = StreamMessage(11, forged[10].data.replace(b"alice", b"mallory"), forged[10].signature)
    report = verify_stream(forged, notes, signers.keyring)
    assert report.finding is not None and report.finding.damage is Damage.ROOT_MISMATCH
    assert report.finding.index == 0  # somewhere below the first checkpoint (size 25)


def test_checkpoints_by_an_unknown_key_or_forged_are_refused(
        logged: tuple[list[StreamMessage], list[bytes], Signers, SqliteAudit]) -> None:
    msgs, notes, signers, store = logged
    other = Signers()  # trusts no log key
    untrusted = verify_stream(msgs, notes, other.keyring, store).finding
    assert untrusted is not None and untrusted.damage is Damage.CHECKPOINT
    assert b"\n60\n" in notes[1]
    forged = notes[1].replace(b"\n60\n", b"\n61\n")
    report = verify_stream(msgs, [notes[0], forged], signers.keyring, store)
    assert report.finding is not None and report.finding.damage is Damage.CHECKPOINT
