"""Integration: extend the Merkle tree by a batch of new leaf hashes. Pure.

:func:`integrate` reads the old tree's frontier through ``fetch_nodes`` (O(log n) nodes,
one call) and returns every perfect node the batch completes plus the new root; it writes
nothing. The store decides how to keep the nodes (one row each, or tiles) and writes them
in the same transaction as the leaves, so integration is all-or-nothing.

Imports only :mod:`ccpipe.pipeline.audit.merkle`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ccpipe.pipeline.audit.merkle import CompactRange, NodeID

FetchNodes = Callable[[Sequence[NodeID]], Sequence[bytes]]
"""Returns the hashes of the given perfect nodes, in order. MUST raise (not guess) when a
node is missing: a wrong frontier silently produces a wrong root."""


@dataclass(frozen=True, slots=True)
class Integrated:
    """What a batch did to the tree."""

    size: int
    """Tree size after the batch."""
    root: bytes
    """RFC 6962 root at ``size``."""
    nodes: dict[NodeID, bytes]
    """Every perfect node completed by the batch, leaves (level 0) included."""


def frontier(fetch_nodes: FetchNodes, size: int) -> CompactRange:
    """The compact range of a stored tree of ``size`` leaves, read with one fetch."""
    ids = CompactRange.frontier_ids(size)
    hashes = list(fetch_nodes(ids)) if ids else []
    if len(hashes) != len(ids):
        raise ValueError(f"fetch_nodes returned {len(hashes)} hashes for {len(ids)} nodes")
    return CompactRange(size, hashes)


def integrate(fetch_nodes: FetchNodes, from_size: int, leaf_hashes: Sequence[bytes]) -> Integrated:
    """Append ``leaf_hashes`` to the tree of ``from_size`` leaves whose nodes ``fetch_nodes``
    serves; return the new size, root and nodes. Raises whatever ``fetch_nodes`` raises."""
    cr = frontier(fetch_nodes, from_size)
    nodes: dict[NodeID, bytes] = {}

    def keep(level: int, index: int, h: bytes) -> None:
        nodes[(level, index)] = h

    cr.extend(leaf_hashes, keep)
    return Integrated(size=cr.size, root=cr.root(), nodes=nodes)
