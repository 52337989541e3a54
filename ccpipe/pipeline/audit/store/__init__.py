"""Log stores: where leaves, Merkle nodes and checkpoints persist.

:mod:`.interface` states the contract; :mod:`.sqlite` is the embedded implementation.
Implementations are independent of each other and share only the pure cores
(:mod:`ccpipe.pipeline.audit.integrate`, :mod:`ccpipe.pipeline.audit.proofs`).
"""

from ccpipe.pipeline.audit.store.interface import Appended, LogStore, StoredCheckpoint, StoredLeaf

__all__ = ["Appended", "LogStore", "StoredCheckpoint", "StoredLeaf"]
