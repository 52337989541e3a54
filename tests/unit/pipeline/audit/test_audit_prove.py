"""``audit prove``: the largest trusted checkpoint, and a document the offline checker accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from ccpipe.pipeline.audit.errors import NotCovered
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.offline import verify_proof_offline
from ccpipe.pipeline.audit.prove import EventNotLogged, latest_checkpoint, prove_event
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.query import EventFilter
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from tests.audit_journeys import Signers, signed_messages


def test_prove_uses_the_largest_trusted_checkpoint(tmp_path: Path) -> None:
    signers = Signers()
    log_key = NoteSigner.generate("test-log")
    signers.keyring.add_log_key(log_key.verifier)
    signers.keyring.save(tmp_path / "keyring.json")
    msgs = [StreamMessage(i + 1, d, s) for i, (d, s) in enumerate(signed_messages(signers, 0, 5))]
    with SqliteAudit(tmp_path / "log.sqlite") as store:
        ing = Ingestor(store, KeyringFile(tmp_path / "keyring.json"))
        ing.ingest(msgs[:20])
        publish_checkpoint(store, log_key)
        ing.ingest(msgs[20:45])
        publish_checkpoint(store, log_key)
        ing.ingest(msgs[45:])  # not covered by any checkpoint yet
        # a rogue, larger checkpoint signed by a key nobody trusts is passed over
        rogue = sign_checkpoint(Checkpoint("test-log", store.size(), store.root()), NoteSigner.generate("test-log"))
        best = latest_checkpoint(store, signers.keyring, [rogue])
        assert best.size == 45
        rows = store.query(EventFilter(limit=100))
        doc = prove_event(store, signers.keyring, rows[44].event_id)
        assert (doc["leaf_index"], doc["tree_size"]) == (44, 45)
        assert verify_proof_offline(doc).event_id == rows[44].event_id
        with pytest.raises(NotCovered):
            prove_event(store, signers.keyring, rows[45].event_id)
        with pytest.raises(EventNotLogged):
            prove_event(store, signers.keyring, "no-such-event")
