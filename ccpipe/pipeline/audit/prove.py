"""``audit prove``: the inclusion proof of one logged event against the latest checkpoint.

Imports :mod:`ccpipe.pipeline.audit` modules only.
"""

from __future__ import annotations

from typing import Any

from ccpipe.pipeline.audit.checkpoint import NoteVerifier, open_note
from ccpipe.pipeline.audit.errors import AuditError, CheckpointError, NotCovered
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.proofs import inclusion_proof, proof_document
from ccpipe.pipeline.audit.store.interface import LogStore, StoredCheckpoint


class EventNotLogged(AuditError):
    """No leaf of the log carries the event id asked for."""

    code = "audit.event.not_found"
    default_hint = "check the id with 'ccpipe audit query'; events are logged within a second of publication"


def signing_log_key(note: bytes, keyring: Keyring) -> NoteVerifier:
    """The keyring's log key that signed ``note``; raises :class:`CheckpointError` if none did."""
    _, sigs = open_note(note, keyring.log_keys)
    by_id = {(v.name, v.key_hash): v for v in keyring.log_keys}
    return by_id[(sigs[0].name, sigs[0].key_hash)]


def latest_checkpoint(store: LogStore, keyring: Keyring, extra: list[bytes] | None = None) -> StoredCheckpoint:
    """The largest checkpoint among the store's and ``extra`` (e.g. the one published on NATS)
    that a log key of ``keyring`` signs. Raises :class:`NotCovered` when there is none.

    Candidates are tried largest first and only until one verifies: a long-running log
    records thousands of checkpoints, and each check is an Ed25519 verification.
    """
    from ccpipe.pipeline.audit.checkpoint import Checkpoint, open_checkpoint

    candidates: list[tuple[int, bytes]] = [(c.size, c.note) for c in store.checkpoints()]
    for note in extra or []:
        try:
            candidates.append((Checkpoint.from_text(note.decode("utf-8").split("\n\n")[0] + "\n").size, note))
        except (CheckpointError, UnicodeDecodeError):
            continue
    for _, note in sorted(candidates, key=lambda c: c[0], reverse=True):
        try:
            cp = open_checkpoint(note, keyring.log_keys)
        except CheckpointError:
            continue
        return StoredCheckpoint(cp.size, cp.root, note)
    raise NotCovered("the log has no checkpoint signed by a trusted log key yet")


def prove_event(store: LogStore, keyring: Keyring, event_id: str, checkpoint: StoredCheckpoint | None = None
                ) -> dict[str, Any]:
    """The ``ccpipe audit prove --json`` document (DESIGN.md "Audit proofs") of ``event_id``.

    Raises :class:`EventNotLogged` if no leaf carries it and :class:`NotCovered` if the
    checkpoint does not cover it yet.
    """
    indexes = store.indexes_of(event_id)
    if not indexes:
        raise EventNotLogged(f"event {event_id} is not in the audit log")
    cp = checkpoint or latest_checkpoint(store, keyring)
    index = indexes[0]
    if index >= cp.size:
        raise NotCovered(f"event {event_id} is leaf {index}; the latest checkpoint covers {cp.size} leaves")
    leaf = next(store.leaves(index, index + 1))
    path = inclusion_proof(store.fetch_nodes, index, cp.size)
    return proof_document(
        event_id=event_id, leaf=leaf.data, leaf_index=index, inclusion_path=path,
        checkpoint_note=cp.note, tree_size=cp.size, log_public_key=signing_log_key(cp.note, keyring).vkey,
    )
