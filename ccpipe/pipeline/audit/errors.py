"""The audit trail's error family.

Every error here is a :class:`ccpipe.schemas.errors.CcpipeError` with a stable dotted ``code``
under ``audit.``. None of them is transient: a proof that does not verify, a checkpoint
that does not parse or a tampered store stays that way, so the stage runtime rejects.

:class:`InconsistencyError` carries its evidence (both raw checkpoints and the proof) so a
caller can publish proof of the log's misbehaviour, as Tessera's ``ErrInconsistency`` does.

Imports nothing of the project except ``ccpipe.schemas.errors``.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, ConfigurationError


class AuditError(CcpipeError):
    """Base of every audit-trail failure."""

    code = "audit.error"


class InvalidProof(AuditError):
    """An inclusion or consistency proof is malformed or does not lead to the expected root."""

    code = "audit.proof.invalid"
    default_hint = "the proof, the tree size or the root does not belong to this log; fetch a fresh proof"


class CheckpointError(AuditError):
    """A signed note or checkpoint is malformed, or no trusted key verifies it."""

    code = "audit.checkpoint.invalid"
    default_hint = "check that the checkpoint is complete and that the log's verifier key is the right one"


class NotCovered(AuditError):
    """The leaf or size asked for is not (yet) covered by the tree or checkpoint in hand."""

    code = "audit.proof.not_covered"
    default_hint = "wait for the next checkpoint, or ask for a proof against a larger tree size"


class StoreError(AuditError):
    """The log store refused an operation or could not complete it; nothing was written."""

    code = "audit.store.error"


class StoreUnreadable(StoreError, ConfigurationError):
    """The store's file cannot be opened as a store at all (damaged, not a database, no access).

    A configuration problem (exit 3), not a failed check: the data directory is at fault.
    """

    code = "audit.store.unreadable"
    default_hint = (
        "restore the audit store from a backup, or move it away and let 'ccpipe audit serve' rebuild it from the stream"
    )


class InconsistencyError(AuditError):
    """Two checkpoints of the same log cannot both be true: the log forked or was rewritten.

    ``old`` and ``new`` are the raw signed notes and ``proof`` the consistency proof that
    failed, so the three together are publishable evidence of misbehaviour.
    """

    code = "audit.log.inconsistent"
    default_hint = "do not trust this log; publish the two checkpoints and the proof to its operator and witnesses"

    def __init__(self, message: str, *, old: bytes, new: bytes, proof: list[bytes]) -> None:
        super().__init__(message)
        self.old = old
        self.new = new
        self.proof = list(proof)
