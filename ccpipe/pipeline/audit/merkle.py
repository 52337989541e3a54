"""Pure RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Hashing (RFC 9162 §2.1.1): leaf hash = SHA-256(0x00 ‖ leaf), node hash =
SHA-256(0x01 ‖ left ‖ right), the empty tree's root = SHA-256(""). For n > 1 leaves the
tree splits at k, the largest power of two smaller than n.

Vocabulary used across ``ccpipe.pipeline.audit``:

* a *node id* ``(level, index)`` names a **perfect** subtree: the 2**level leaves
  ``[index << level, (index + 1) << level)``; level 0 is a leaf hash. Only perfect subtrees
  are ever stored; the hash of any other RFC 6962 subtree is folded from them.
* a :class:`CompactRange` (the "frontier") holds the roots of the perfect subtrees that
  cover ``[0, size)``, one per set bit of ``size``. Appending a leaf merges like a binary
  counter, so appending N leaves costs N leaf hashes and fewer than N node hashes in total.

Policy on proofs from the empty tree (the two shared vector sets disagree): a consistency
proof whose first size is 0 is **always rejected** by :func:`verify_consistency`, including
0 → 0, as transparency-dev/merkle does (its vectors expect an error; rgdd/CCTV's accept
0 → 0 and 0 → 1 with an empty path). RFC 9162 §2.1.4 defines consistency proofs only for
0 < m ≤ n, and an "empty proof from the empty tree" proves nothing: accepting it would let
a caller believe it had checked something. A log-level client that holds a size-0
checkpoint checks that its root is :data:`EMPTY_ROOT` and needs no proof (see
:func:`ccpipe.pipeline.audit.proofs.check_consistency`).

Beyond RFC 9162's algorithms, verification also refuses a leaf hash or proof element that
is not exactly 32 bytes (a 0-byte leaf hash with an empty proof would otherwise "match" a
0-byte root).

Imports only the standard library and :mod:`ccpipe.pipeline.audit.errors`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from ccpipe.pipeline.audit.errors import InvalidProof

HASH_SIZE = 32
"""Bytes in every leaf, node and root hash (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves."""

NodeID = tuple[int, int]
"""``(level, index)`` of a perfect subtree."""

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 ‖ leaf): the RFC 6962 hash of one leaf's bytes."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the RFC 6962 hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The frontier of a tree of ``size`` leaves: perfect-subtree roots, largest first.

    ``hashes[i]`` is the root of node ``frontier_ids(size)[i]``. Build an empty one with
    ``CompactRange()``, or resume from stored nodes with ``CompactRange(size, hashes)``.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self._hashes = list(hashes)

    @staticmethod
    def frontier_ids(size: int) -> list[NodeID]:
        """Node ids of the perfect subtrees covering ``[0, size)``, left (largest) first."""
        return range_nodes(0, size)

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the frontier hashes, left (largest) first."""
        return list(self._hashes)

    def append(self, leaf_hash: bytes, visit: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add one leaf hash; ``visit(level, index, hash)`` sees every node it completes."""
        self.extend((leaf_hash,), visit)

    def extend(self, leaf_hashes: Iterable[bytes], visit: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add leaf hashes in order; ``visit`` (if given) sees each completed perfect node,
        the leaves themselves included (level 0)."""
        stack = self._hashes
        size = self.size
        sha = _sha256
        for h in leaf_hashes:
            if visit is not None:
                visit(0, size, h)
            # A set low bit means a finished left sibling of the same height waits on the
            # stack: merge, exactly like carrying in a binary increment.
            s, level = size, 0
            while s & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                s >>= 1
                level += 1
                if visit is not None:
                    visit(level, s, h)
            stack.append(h)
            size += 1
        self.size = size

    def root(self) -> bytes:
        """The RFC 6962 root of the ``size`` leaves appended so far."""
        return fold_right(self._hashes)


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Root of a tree whose perfect subtrees, left to right and strictly shrinking, are
    ``hashes`` (RFC 6962 splits at the largest power of two, so the right edge nests)."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = _sha256(b"\x01" + left + h).digest()
    return h


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """RFC 6962 root (MTH) of a list of leaf hashes, in O(n)."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """Greedy decomposition of ``[begin, end)`` into aligned perfect subtrees, left first.

    For a subtree of the RFC 6962 tree the result shrinks left to right, so
    :func:`fold_right` over the node hashes gives that subtree's hash.
    """
    out: list[NodeID] = []
    while begin < end:
        # Largest block that starts at `begin` (alignment) and fits before `end`.
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        out.append((level, begin >> level))
        begin += 1 << level
    return out


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[a, b)`` whose subtree hashes form PATH(index, D[size]), bottom first.

    RFC 9162 §2.1.3.1, unrolled: walk down from the root, keeping the sibling of the half
    that holds ``index``.
    """
    if not 0 <= index < size:
        raise NotCoveredIndex(index, size)
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose subtree hashes form PROOF(size1, D[size2]), bottom first.

    RFC 9162 §2.1.4.1 SUBPROOF, unrolled. Requires 0 < size1 ≤ size2 (an equal size gives
    the empty proof).
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proofs need 0 < size1 <= size2, got {size1} and {size2}")
    out = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        # The old tree's last subtree is not a node the verifier already knows.
        out.append((lo, hi))
    out.reverse()
    return out


class NotCoveredIndex(ValueError):
    """``index`` is outside a tree of ``size`` leaves (internal; callers see NotCovered)."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"leaf index {index} is outside a tree of {size} leaves")


def _slice_root(leaf_hashes: Sequence[bytes], a: int, b: int) -> bytes:
    return root(leaf_hashes[a:b])


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the first ``size`` (default: all) leaf hashes.

    Raises ``ValueError`` if ``index`` or ``size`` is out of range.
    """
    size = len(leaf_hashes) if size is None else size
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")
    return [_slice_root(leaf_hashes, a, b) for a, b in inclusion_ranges(index, size)]


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int | None = None) -> list[bytes]:
    """Consistency proof from the first ``size1`` to the first ``size2`` leaf hashes.

    Raises ``ValueError`` unless 0 < size1 ≤ size2 ≤ len(leaf_hashes).
    """
    size2 = len(leaf_hashes) if size2 is None else size2
    if size2 > len(leaf_hashes):
        raise ValueError(f"tree size {size2} exceeds the {len(leaf_hashes)} leaves given")
    return [_slice_root(leaf_hashes, a, b) for a, b in consistency_ranges(size1, size2)]


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidProof(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf_hash`` at ``index`` in a tree of ``size``.

    RFC 9162 §2.1.3.2 steps 1–4. Raises :class:`InvalidProof` if the index is outside the
    tree, a hash is not 32 bytes, or the proof has the wrong length.
    """
    # (1) the index must be inside the tree.
    if not 0 <= index < size:
        raise InvalidProof(f"leaf index {index} is outside a tree of {size} leaves")
    _check_hash("leaf hash", leaf_hash)
    # (2) fn walks the leaf's path, sn the right border's; (3) r starts at the leaf.
    fn, sn, r = index, size - 1, leaf_hash
    for i, p in enumerate(proof):
        _check_hash(f"proof element {i}", p)
        # (4a) the border reached the root with elements left over: too long.
        if sn == 0:
            raise InvalidProof(f"inclusion proof has {len(proof)} elements, more than the path is long")
        # (4b) p is a left sibling when fn is a right child, or when fn is on the right
        # border (fn == sn) where the levels without a right sibling are skipped.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # (4c)
        fn >>= 1
        sn >>= 1
    # (5, first half) a proof that stops before the root is too short.
    if sn != 0:
        raise InvalidProof(f"inclusion proof has {len(proof)} elements, fewer than the path is long")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf ``leaf_hash`` sits at ``index`` in the tree of ``size`` with ``root``.

    Raises :class:`InvalidProof` naming what did not hold.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    # (5, second half)
    if calculated != root:
        raise InvalidProof(
            f"inclusion proof for leaf {index} of {size} leads to root {calculated.hex()}, not {root.hex()}"
        )


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of ``size2`` with ``root2``.

    RFC 9162 §2.1.4.2, plus: equal sizes need an empty proof and equal roots; size1 = 0 is
    always refused (see the module docstring for why). Raises :class:`InvalidProof`.
    """
    if size1 > size2:
        raise InvalidProof(f"first tree size {size1} is larger than the second, {size2}")
    if size1 == 0:
        raise InvalidProof("a consistency proof from the empty tree proves nothing and is refused")
    if size1 == size2:
        if proof:
            raise InvalidProof(f"sizes are equal ({size1}) but the consistency proof is not empty")
        if root1 != root2:
            raise InvalidProof(f"sizes are equal ({size1}) but the roots differ")
        return
    # (1)
    if not proof:
        raise InvalidProof(f"consistency proof from {size1} to {size2} is empty")
    for i, p in enumerate(proof):
        _check_hash(f"proof element {i}", p)
    path = list(proof)
    # (2) a perfect old tree is itself a node of the new one: its root starts the walk.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # (3)
    fn, sn = size1 - 1, size2 - 1
    # (4) skip the levels where the old tree's last node is a right child.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5)
    fr = sr = path[0]
    # (6)
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof(f"consistency proof from {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # (7)
    if sn != 0:
        raise InvalidProof(f"consistency proof from {size1} to {size2} is too short")
    if fr != root1:
        raise InvalidProof(f"consistency proof does not lead to the first root (size {size1})")
    if sr != root2:
        raise InvalidProof(f"consistency proof does not lead to the second root (size {size2})")
