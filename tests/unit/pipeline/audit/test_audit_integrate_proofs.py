"""integrate (pure) and the read-side proofs over a node-fetch function, against the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.pipeline.audit import merkle
from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from ccpipe.pipeline.audit.errors import CheckpointError, InconsistencyError, NotCovered
from ccpipe.pipeline.audit.integrate import integrate
from ccpipe.pipeline.audit.proofs import check_consistency, consistency_proof, inclusion_proof
from tests.unit.pipeline.audit import audit_naive as naive


class MemoryNodes:
    """An in-memory node store that records what was fetched."""

    def __init__(self) -> None:
        self.nodes: dict[merkle.NodeID, bytes] = {}
        self.fetched: list[merkle.NodeID] = []

    def fetch(self, ids: Sequence[merkle.NodeID]) -> list[bytes]:
        self.fetched.extend(ids)
        return [self.nodes[i] for i in ids]  # KeyError = missing node, as the contract requires


def hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"e%d" % i) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.integers(0, 40), min_size=1, max_size=12))
def test_integrate_in_batches_gives_the_oracle_root_and_nodes(batches: list[int]) -> None:
    store = MemoryNodes()
    all_hashes = hashes(sum(batches))
    size = 0
    for b in batches:
        store.fetched.clear()
        done = integrate(store.fetch, size, all_hashes[size : size + b])
        # Only the old frontier is read: O(log n) nodes, never a leaf it does not need.
        assert len(store.fetched) == size.bit_count()
        store.nodes.update(done.nodes)
        size += b
        assert done.size == size
        assert done.root == naive.mth(all_hashes[:size])
    for (level, idx), h in store.nodes.items():
        assert h == naive.perfect_node(level, idx, all_hashes)


def test_integrate_with_a_missing_frontier_node_fails_instead_of_guessing() -> None:
    store = MemoryNodes()
    store.nodes.update(integrate(store.fetch, 0, hashes(6)).nodes)
    del store.nodes[(2, 0)]
    with pytest.raises(KeyError):
        integrate(store.fetch, 6, hashes(7)[6:])


def _built(n: int) -> tuple[MemoryNodes, list[bytes]]:
    store = MemoryNodes()
    hs = hashes(n)
    store.nodes.update(integrate(store.fetch, 0, hs).nodes)
    return store, hs


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 600))
def test_proofs_from_stored_nodes_match_the_oracle_and_verify(data: st.DataObject, n: int) -> None:
    store, hs = _built(n)
    size = data.draw(st.integers(1, n), label="tree size")
    i = data.draw(st.integers(0, size - 1), label="index")
    store.fetched.clear()
    proof = inclusion_proof(store.fetch, i, size)
    assert proof == naive.path(i, hs[:size])
    assert len(store.fetched) <= 2 * size.bit_length() + 1  # O(log n) reads
    merkle.verify_inclusion(hs[i], i, size, proof, naive.mth(hs[:size]))
    m = data.draw(st.integers(1, size), label="old size")
    cproof = consistency_proof(store.fetch, m, size)
    assert cproof == naive.proof(m, hs[:size])
    merkle.verify_consistency(m, size, cproof, naive.mth(hs[:m]), naive.mth(hs[:size]))


def test_proofs_outside_the_tree_are_refused() -> None:
    store, _ = _built(5)
    with pytest.raises(NotCovered):
        inclusion_proof(store.fetch, 5, 5)
    with pytest.raises(NotCovered):
        consistency_proof(store.fetch, 0, 5)
    with pytest.raises(NotCovered):
        consistency_proof(store.fetch, 4, 3)


ORIGIN = "ccpipe.test/log"


def _note(signer: NoteSigner, hs: list[bytes], size: int) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, merkle.root(hs[:size])), signer)


def test_check_consistency_accepts_an_honest_log_and_a_size_zero_start() -> None:
    signer = NoteSigner.generate(ORIGIN)
    store, hs = _built(20)
    old, new = _note(signer, hs, 7), _note(signer, hs, 20)
    a, b = check_consistency(old, new, consistency_proof(store.fetch, 7, 20), [signer.verifier])
    assert (a.size, b.size) == (7, 20)
    empty = sign_checkpoint(Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT), signer)
    check_consistency(empty, new, [], [signer.verifier])


def test_a_forked_log_raises_inconsistency_with_the_evidence() -> None:
    signer = NoteSigner.generate(ORIGIN)
    store, hs = _built(20)
    old = _note(signer, hs, 7)
    forked = [*hs[:3], merkle.leaf_hash(b"rewritten"), *hs[4:]]
    new = _note(signer, forked, 20)
    proof = consistency_proof(store.fetch, 7, 20)
    with pytest.raises(InconsistencyError) as info:
        check_consistency(old, new, proof, [signer.verifier])
    assert info.value.old == old and info.value.new == new and info.value.proof == proof
    assert info.value.code == "audit.log.inconsistent"


def test_check_consistency_refuses_checkpoints_not_signed_by_the_log() -> None:
    signer, stranger = NoteSigner.generate(ORIGIN), NoteSigner.generate(ORIGIN)
    store, hs = _built(9)
    with pytest.raises(CheckpointError):
        check_consistency(
            _note(signer, hs, 3), _note(stranger, hs, 9), consistency_proof(store.fetch, 3, 9), [signer.verifier]
        )
