"""A naive, recursive RFC 6962 / RFC 9162 implementation: the oracle for ccpipe.pipeline.audit.

Written straight from the RFC's definitions (MTH, PATH, SUBPROOF) and sharing no code with
the implementation under test. Quadratic and slow on purpose: it is only ever compared
against.
"""

from __future__ import annotations

import hashlib


def h_leaf(data: bytes) -> bytes:
    return hashlib.sha256(bytes([0]) + data).digest()


def h_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(bytes([1]) + left + right).digest()


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes: list[bytes]) -> bytes:
    """MTH over leaf *hashes* (RFC 9162 §2.1.1 with the leaf hashing done already)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = k_of(n)
    return h_node(mth(hashes[:k]), mth(hashes[k:]))


def path(m: int, hashes: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1)."""
    n = len(hashes)
    if n <= 1:
        return []
    k = k_of(n)
    if m < k:
        return [*path(m, hashes[:k]), mth(hashes[k:])]
    return [*path(m - k, hashes[k:]), mth(hashes[:k])]


def subproof(m: int, hashes: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (RFC 9162 §2.1.4.1)."""
    n = len(hashes)
    if m == n:
        return [] if b else [mth(hashes)]
    k = k_of(n)
    if m <= k:
        return [*subproof(m, hashes[:k], b), mth(hashes[k:])]
    return [*subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def proof(m: int, hashes: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n."""
    return subproof(m, hashes, True)


def perfect_node(level: int, index: int, hashes: list[bytes]) -> bytes:
    """Hash of the perfect subtree (level, index)."""
    return mth(hashes[index << level : (index + 1) << level])
