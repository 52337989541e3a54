"""ccpipe.pipeline.audit.merkle against the upstream vectors, the naive oracle and random trees."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpipe.pipeline.audit import merkle
from ccpipe.pipeline.audit.errors import InvalidProof
from tests.conftest import VECTORS
from tests.unit.pipeline.audit import audit_naive as naive

TD = VECTORS / "merkle" / "transparency-dev-merkle"
RGDD = VECTORS / "merkle" / "rgdd-cctv-merkle"


def b64(s: str) -> bytes:
    return base64.b64decode(s)


def _cases(folder: str) -> list[Any]:
    files = sorted((TD / folder).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(TD))) for f in files]


def _load(name: str) -> Any:
    return json.loads((RGDD / name).read_text())


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf-{i}".encode()) for i in range(n)]


# --- known answers (transparency-dev/merkle rfc6962_test.go, quoted in the reference notes)


def test_known_answer_hashes() -> None:
    assert merkle.EMPTY_ROOT.hex().startswith("e3b0c442") and merkle.EMPTY_ROOT.hex().endswith("b855")
    assert merkle.root([]) == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"").hex().startswith("6e340b9c") and merkle.leaf_hash(b"").hex().endswith("a01d")
    assert merkle.leaf_hash(b"L123456").hex()[:8] == "395aa064"
    assert merkle.leaf_hash(b"L123456").hex()[-4:] == "4d56"
    node = merkle.node_hash(b"N123", b"N456").hex()
    assert node[:8] == "aa217fe8" and node[-4:] == "6bbb"


# --- transparency-dev/merkle vectors (all 196 agree with our policy)


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_transparency_dev_inclusion(case: dict[str, Any]) -> None:
    args = (b64(case["leafHash"]), case["leafIdx"], case["treeSize"], [b64(p) for p in case["proof"] or []])
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(*args, b64(case["root"]))
    else:
        merkle.verify_inclusion(*args, b64(case["root"]))


@pytest.mark.parametrize("case", _cases("consistency"))
def test_transparency_dev_consistency(case: dict[str, Any]) -> None:
    args = (case["size1"], case["size2"], [b64(p) for p in case["proof"] or []], b64(case["root1"]))
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(*args, b64(case["root2"]))
    else:
        merkle.verify_consistency(*args, b64(case["root2"]))


# --- rgdd/CCTV vectors


def test_rgdd_tree_heads_for_sizes_1_to_16() -> None:
    tree = _load("merkle_tree.json")
    hashes = [merkle.leaf_hash(x["leaf_data"].encode()) for x in tree]
    for i, x in enumerate(tree):
        assert hashes[i] == b64(x["leaf_hash"])
        assert merkle.root(hashes[: i + 1]) == b64(x["root_hash"])


def _rgdd_hashes() -> list[bytes]:
    return [merkle.leaf_hash(x["leaf_data"].encode()) for x in _load("merkle_tree.json")]


@pytest.mark.parametrize("case", _load("inclusion-valid.json"))
def test_rgdd_inclusion_valid_verifies_and_is_what_we_generate(case: dict[str, Any]) -> None:
    path = [b64(p) for p in case["inclusion_path"]]
    merkle.verify_inclusion(b64(case["leaf_hash"]), case["leaf_index"], case["tree_size"], path, b64(case["root_hash"]))
    assert merkle.inclusion_proof(_rgdd_hashes(), case["leaf_index"], case["tree_size"]) == path


@pytest.mark.parametrize("case", _load("inclusion-invalid.json"), ids=lambda c: c.get("comment", ""))
def test_rgdd_inclusion_invalid_fails(case: dict[str, Any]) -> None:
    path = [b64(p) for p in case["inclusion_path"]]
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(
            b64(case["leaf_hash"]), case["leaf_index"], case["tree_size"], path, b64(case["root_hash"])
        )


@pytest.mark.parametrize("case", _load("consistency-valid.json"))
def test_rgdd_consistency_valid(case: dict[str, Any]) -> None:
    args = (case["old_size"], case["new_size"], [b64(p) for p in case["consistency_path"]], b64(case["old_root"]))
    if case["old_size"] == 0:
        # Deliberate divergence (policy in merkle's docstring): proofs from size 0 are refused.
        with pytest.raises(InvalidProof, match="empty tree"):
            merkle.verify_consistency(*args, b64(case["new_root"]))
        return
    merkle.verify_consistency(*args, b64(case["new_root"]))
    if case["old_size"] < case["new_size"]:
        assert merkle.consistency_proof(_rgdd_hashes(), case["old_size"], case["new_size"]) == args[2]


@pytest.mark.parametrize("case", _load("consistency-invalid.json"), ids=lambda c: c.get("comment", ""))
def test_rgdd_consistency_invalid_fails(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(
            case["old_size"],
            case["new_size"],
            [b64(p) for p in case["consistency_path"]],
            b64(case["old_root"]),
            b64(case["new_root"]),
        )


# --- oracle and properties


@pytest.mark.parametrize("n", range(0, 70))
def test_root_and_proofs_match_the_naive_oracle(n: int) -> None:
    hs = leaves(n)
    assert merkle.root(hs) == naive.mth(hs)
    for i in range(n):
        assert merkle.inclusion_proof(hs, i) == naive.path(i, hs)
    for m in range(1, n + 1):
        assert merkle.consistency_proof(hs, m) == naive.proof(m, hs)


def test_compact_range_reports_every_perfect_node() -> None:
    hs = leaves(77)
    seen: dict[tuple[int, int], bytes] = {}
    cr = merkle.CompactRange()
    cr.extend(hs, lambda level, idx, h: seen.__setitem__((level, idx), h))
    expected = {(lv, i) for lv in range(7) for i in range(77 >> lv)}
    assert set(seen) == expected
    for (lv, i), h in seen.items():
        assert h == naive.perfect_node(lv, i, hs)
    resumed = merkle.CompactRange(cr.size, cr.hashes)
    resumed.extend(leaves(90)[77:])
    assert resumed.root() == naive.mth(leaves(90))


def test_compact_range_refuses_a_frontier_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError):
        merkle.CompactRange(5, [merkle.EMPTY_ROOT])


sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=sizes)
def test_inclusion_properties(data: st.DataObject, n: int) -> None:
    hs = leaves(n)
    r = merkle.root(hs)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(hs, i)
    merkle.verify_inclusion(hs[i], i, n, proof, r)
    with pytest.raises(InvalidProof):  # a modified leaf
        merkle.verify_inclusion(merkle.leaf_hash(b"forged"), i, n, proof, r)
    wrong = data.draw(st.integers(0, n).filter(lambda j: j != i), label="wrong index")
    with pytest.raises(InvalidProof):  # a wrong index (or one past the end)
        merkle.verify_inclusion(hs[i], wrong, n, proof, r)
    if proof:
        with pytest.raises(InvalidProof):  # a truncated path
            merkle.verify_inclusion(hs[i], i, n, proof[:-1], r)
        k = data.draw(st.integers(0, len(proof) - 1), label="flipped element")
        flipped = [*proof[:k], bytes([proof[k][0] ^ 1]) + proof[k][1:], *proof[k + 1 :]]
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(hs[i], i, n, flipped, r)
    with pytest.raises(InvalidProof):  # a padded path
        merkle.verify_inclusion(hs[i], i, n, [*proof, r], r)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=sizes)
def test_consistency_properties(data: st.DataObject, n: int) -> None:
    hs = leaves(n)
    m = data.draw(st.integers(1, n), label="old size")
    proof = merkle.consistency_proof(hs, m)
    r1, r2 = merkle.root(hs[:m]), merkle.root(hs)
    merkle.verify_consistency(m, n, proof, r1, r2)
    if m < n:
        with pytest.raises(InvalidProof):  # the old tree was rewritten
            forked = merkle.root([merkle.leaf_hash(b"x"), *hs[1:m]])
            merkle.verify_consistency(m, n, proof, forked, r2)
        with pytest.raises(InvalidProof):  # the new tree rewrote history
            merkle.verify_consistency(m, n, proof, r1, merkle.root([merkle.leaf_hash(b"x"), *hs[1:]]))
        with pytest.raises(InvalidProof):  # truncated
            merkle.verify_consistency(m, n, proof[:-1], r1, r2)


def test_proofs_from_the_empty_tree_are_refused() -> None:
    with pytest.raises(InvalidProof, match="empty tree"):
        merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(ValueError):
        merkle.consistency_proof(leaves(3), 0)


def test_vectors_folder_is_the_documented_one() -> None:
    # SOURCES.md counts 98 inclusion + 98 consistency files; a partial copy must not pass silently.
    assert len(list((TD / "inclusion").rglob("*.json"))) == 98
    assert len(list((TD / "consistency").rglob("*.json"))) == 98
    assert isinstance(TD, Path)
