"""Node attribution of an RCAR session: only a proof by the node's attested key names a node."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.enclave_runner.join import public_node_key
from ccpipe.schemas.kbs import NodeProof
from ccpipe.schemas.nodes import node_proof_message
from ccpipe.stages.attest.kbs.node_proof import NodeAttribution, NodeKeys, attribute

NONCE = "bm9uY2U="
TEE_KEY = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}
NODE_A, NODE_B = "node-a", "node-b"
KEY_A, KEY_B = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def keys() -> NodeKeys:
    records = {NODE_A: public_node_key(KEY_A), NODE_B: public_node_key(KEY_B)}

    async def lookup(node_id: str) -> str | None:
        return records.get(node_id)

    return lookup


def proof(node_id: str, key: Ed25519PrivateKey, *, nonce: str = NONCE) -> NodeProof:
    signature = key.sign(node_proof_message(node_id, nonce, TEE_KEY))
    return NodeProof(node_id=node_id, signature=base64.urlsafe_b64encode(signature).rstrip(b"=").decode())


async def attributed(claimed: str | None, given: NodeProof | None,
                     node_keys: NodeKeys | None = None) -> NodeAttribution:
    return await attribute(claimed, given, nonce=NONCE, tee_pubkey=TEE_KEY,
                           node_keys=keys() if node_keys is None else node_keys)


async def test_a_proof_by_the_attested_key_names_the_node() -> None:
    assert await attributed(NODE_A, proof(NODE_A, KEY_A)) == NodeAttribution(NODE_A)
    assert await attributed(None, proof(NODE_A, KEY_A)) == NodeAttribution(NODE_A)


async def test_no_claim_and_no_proof_names_no_node() -> None:
    assert await attributed(None, None) == NodeAttribution(None)


async def test_an_unproven_name_is_kept_only_as_a_claim() -> None:
    cases = ((NODE_A, None), (NODE_A, proof(NODE_A, KEY_B)), ("never-joined", proof("never-joined", KEY_A)))
    for claimed, given in cases:
        got = await attributed(claimed, given)
        assert got.node_id is None and got.claimed == claimed and got.problem, (claimed, got)


async def test_a_proof_of_another_session_does_not_count() -> None:
    got = await attributed(NODE_A, proof(NODE_A, KEY_A, nonce="b3RoZXI="))
    assert got.node_id is None and got.claimed == NODE_A and "not signed" in (got.problem or "")


async def test_a_claim_of_one_node_with_the_proof_of_another_credits_the_proven_one() -> None:
    got = await attributed(NODE_B, proof(NODE_A, KEY_A))
    assert (got.node_id, got.claimed) == (NODE_A, NODE_B)


async def test_without_node_records_nothing_is_proven() -> None:
    async def none(node_id: str) -> str | None:
        return None

    got = await attributed(NODE_A, proof(NODE_A, KEY_A), none)
    assert got.node_id is None and got.claimed == NODE_A
