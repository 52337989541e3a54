"""The read side: proofs from stored perfect nodes, and checking checkpoints against each other.

Every function takes its I/O as a ``fetch_nodes`` function (see
:data:`ccpipe.pipeline.audit.integrate.FetchNodes`), so one implementation serves SQLite, memory or
HTTP. A proof needs O(log n) stored nodes, fetched in one call: each proof element is the
hash of an RFC 6962 subtree, folded from the perfect subtrees that make it up.

Imports only :mod:`ccpipe.pipeline.audit` modules.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from ccpipe.pipeline.audit.errors import InconsistencyError, InvalidProof, NotCovered
from ccpipe.pipeline.audit.integrate import FetchNodes
from ccpipe.pipeline.audit.merkle import (
    EMPTY_ROOT,
    NodeID,
    consistency_ranges,
    fold_right,
    inclusion_ranges,
    range_nodes,
    verify_consistency,
)


def _subtree_hashes(fetch_nodes: FetchNodes, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    plans = [range_nodes(a, b) for a, b in ranges]
    wanted: list[NodeID] = sorted({n for plan in plans for n in plan})
    got = fetch_nodes(wanted)
    if len(got) != len(wanted):
        raise ValueError(f"fetch_nodes returned {len(got)} hashes for {len(wanted)} nodes")
    by_id = dict(zip(wanted, got, strict=True))
    return [fold_right([by_id[n] for n in plan]) for plan in plans]


def subtree_hash(fetch_nodes: FetchNodes, begin: int, end: int) -> bytes:
    """MTH of leaves ``[begin, end)`` of an RFC 6962 subtree (or root when begin = 0)."""
    if begin == end:
        return EMPTY_ROOT
    return _subtree_hashes(fetch_nodes, [(begin, end)])[0]


def inclusion_proof(fetch_nodes: FetchNodes, index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the tree of ``size`` leaves, bottom first.

    Raises :class:`NotCovered` if ``index`` is not below ``size``; whatever ``fetch_nodes``
    raises if a node is missing.
    """
    if not 0 <= index < size:
        raise NotCovered(f"leaf {index} is not in a tree of {size} leaves")
    return _subtree_hashes(fetch_nodes, inclusion_ranges(index, size))


def consistency_proof(fetch_nodes: FetchNodes, size1: int, size2: int) -> list[bytes]:
    """Consistency proof from tree size ``size1`` to ``size2`` (empty when equal).

    Raises :class:`NotCovered` unless 0 < size1 ≤ size2.
    """
    if not 0 < size1 <= size2:
        raise NotCovered(f"no consistency proof exists from size {size1} to size {size2}")
    return _subtree_hashes(fetch_nodes, consistency_ranges(size1, size2))


def check_consistency(
    old_note: bytes, new_note: bytes, proof: Sequence[bytes], verifiers: Iterable[NoteVerifier]
) -> tuple[Checkpoint, Checkpoint]:
    """Verify two signed checkpoints of one log and the consistency proof between them.

    Returns both checkpoints, oldest first. A size-0 checkpoint must carry the empty root
    and needs no proof (see :mod:`ccpipe.pipeline.audit.merkle` on the size-0 policy). Raises
    :class:`~ccpipe.pipeline.audit.errors.CheckpointError` if a note does not verify and
    :class:`InconsistencyError` (carrying both notes and the proof) if they contradict.
    """
    keys = list(verifiers)
    old = open_checkpoint(old_note, keys)
    new = open_checkpoint(new_note, keys, origin=old.origin)
    if old.size > new.size:
        old, new, old_note, new_note = new, old, new_note, old_note
    try:
        if old.size == 0:
            if old.root != EMPTY_ROOT:
                raise InvalidProof("a checkpoint of size 0 must carry the empty tree's root")
            if proof:
                raise InvalidProof("no proof is needed from the empty tree, but one was given")
        else:
            verify_consistency(old.size, new.size, proof, old.root, new.root)
    except InvalidProof as exc:
        raise InconsistencyError(
            f"checkpoints {old.size} and {new.size} of {old.origin!r} are inconsistent: {exc.message}",
            old=old_note,
            new=new_note,
            proof=list(proof),
        ) from exc
    return old, new


def proof_document(
    *,
    event_id: str,
    leaf: bytes,
    leaf_index: int,
    inclusion_path: Sequence[bytes],
    checkpoint_note: bytes,
    tree_size: int,
    log_public_key: str,
) -> dict[str, Any]:
    """The ``ccpipe audit prove --json`` document (DESIGN.md, "Audit proofs")."""
    return {
        "event_id": event_id,
        "leaf": base64.b64encode(leaf).decode(),
        "leaf_index": leaf_index,
        "tree_size": tree_size,
        "inclusion_path": [h.hex() for h in inclusion_path],
        "checkpoint": checkpoint_note.decode("utf-8"),
        "log_public_key": log_public_key,
    }
