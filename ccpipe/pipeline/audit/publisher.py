"""Publishing: sign a checkpoint over the store's current tree and record it.

A log MUST NOT sign two inconsistent checkpoints (c2sp.org/tlog-checkpoint), so before
signing, the new tree is checked against the last recorded checkpoint with a consistency
proof built from the store; a failure raises :class:`InconsistencyError` with the evidence
and signs nothing.

Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from ccpipe.pipeline.audit.errors import InconsistencyError, InvalidProof
from ccpipe.pipeline.audit.merkle import EMPTY_ROOT, verify_consistency
from ccpipe.pipeline.audit.proofs import consistency_proof
from ccpipe.pipeline.audit.store.interface import LogStore, StoredCheckpoint


def last_checkpoint(store: LogStore) -> StoredCheckpoint | None:
    """The largest recorded checkpoint, if any."""
    # Stores that can read the last one alone are spared reading all of them.
    latest = getattr(store, "latest_checkpoint", None)
    if callable(latest):
        found: StoredCheckpoint | None = latest()
        return found
    return next(reversed(store.checkpoints()), None)


def publish_checkpoint(store: LogStore, signer: NoteSigner, *, origin: str | None = None) -> bytes:
    """Sign a checkpoint at the store's size, record it, and return the signed note.

    ``origin`` defaults to the signer's key name (the spec's recommendation). Raises
    :class:`InconsistencyError` if the tree does not extend the last checkpoint.
    """
    cp = Checkpoint(origin or signer.name, store.size(), store.root())
    last = last_checkpoint(store)
    if last is not None:
        proof: list[bytes] = []
        try:
            if last.size > cp.size:
                raise InvalidProof(f"the log shrank from {last.size} to {cp.size} leaves")
            if last.size == 0:
                if last.root != EMPTY_ROOT:
                    raise InvalidProof("the size-0 checkpoint does not carry the empty root")
            else:
                proof = consistency_proof(store.fetch_nodes, last.size, cp.size)
                verify_consistency(last.size, cp.size, proof, last.root, cp.root)
        except InvalidProof as exc:
            raise InconsistencyError(
                f"refusing to sign size {cp.size}: {exc.message}",
                old=last.note,
                new=cp.text().encode(),
                proof=proof,
            ) from exc
    note = sign_checkpoint(cp, signer)
    store.add_checkpoint(cp.size, cp.root, note)
    return note
