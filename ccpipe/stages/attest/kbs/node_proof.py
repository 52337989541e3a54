"""Which runner node an RCAR session came from: the node its proof shows, never the name it sends.

A runner names its node in ``/auth`` (``extra-params.ccpipe-node``) and proves it in
``/attest`` (``ccpipe-node-proof``): an Ed25519 signature by the node key over the node id,
the session's nonce and the TEE public key (:func:`~ccpipe.schemas.nodes.node_proof_message`).
The key is the one the node bound into its own TEE evidence when it joined
(``CCPIPE_NODE_ATTESTATIONS``), so a valid proof shows the request came from that attested
node, for this session only.

:func:`attribute` returns a :class:`NodeAttribution`: the proven node (or None) and the name
the client claimed when the proof does not bear it out. A mismatch is recorded, not refused
(``docs/design/trust.md``): the key release itself is decided by the enclave's evidence and
the workload's requirements, and the events name only the proven node. No NATS here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ccpipe.crypto import ed25519, jose
from ccpipe.schemas.kbs import NodeProof
from ccpipe.schemas.nodes import node_proof_message

NodeKeys = Callable[[str], Awaitable[str | None]]
"""The attested node key (base64url Ed25519) of a node id, or None if the node never joined."""


@dataclass(frozen=True)
class NodeAttribution:
    """Who a session is attributed to."""

    node_id: str | None
    """The node the proof shows (None: no valid proof)."""
    claimed: str | None = None
    """The name the client sent, when it is not the proven node (a claim nothing bore out)."""
    problem: str | None = None
    """Why the claim was not borne out (for the log), when there is a claim."""


async def _proven(proof: NodeProof, nonce: str, tee_pubkey: dict[str, Any], node_keys: NodeKeys | None) -> str | None:
    """Why ``proof`` does not show its node (a message), or None when it does."""
    recorded = await node_keys(proof.node_id) if node_keys is not None else None
    if recorded is None:
        return f"node {proof.node_id!r} has not attested (no attestation record)"
    message = node_proof_message(proof.node_id, nonce, tee_pubkey)
    try:
        key, signature = jose.b64url_decode(recorded), jose.b64url_decode(proof.signature)
    except ValueError:
        key = signature = b""
    if not ed25519.verify(key, message, signature):
        return f"the node proof is not signed by the attested key of node {proof.node_id!r}"
    return None


async def attribute(claimed: str | None, proof: NodeProof | None, *, nonce: str, tee_pubkey: dict[str, Any],
                    node_keys: NodeKeys | None) -> NodeAttribution:
    """The node a session is attributed to (see the module docstring).

    ``claimed`` is the ``ccpipe-node`` the client sent in ``/auth``; ``proof`` its
    ``ccpipe-node-proof``; ``node_keys`` looks up attested node keys (None: no node has a
    record this KBS can read, so nothing can be proven).
    """
    problem: str | None = None
    if proof is None:
        problem = "the request carries no node proof"
    else:
        problem = await _proven(proof, nonce, tee_pubkey, node_keys)
        if problem is None:
            if claimed is not None and claimed != proof.node_id:
                return NodeAttribution(proof.node_id, claimed, f"it proves node {proof.node_id!r}")
            return NodeAttribution(proof.node_id)
    return NodeAttribution(None, claimed, problem if claimed is not None else None)


__all__ = ["NodeAttribution", "NodeKeys", "attribute"]
