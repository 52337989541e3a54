"""Nodes the attestation service admitted, for tests that place work on nodes without a TEE of that kind.

:func:`attestation` is the record the attestation service stores when a node's evidence (of
``tee``, emulated or not, with ``tcb``) binding ``key`` verified; :func:`record_attestation`
stores it where the service would. Tests of placement rules use these for TEE types this
machine cannot produce evidence of; the join itself is tested with real evidence
(``tests/integration/stages/deploy/test_node_admission.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from ccpipe.enclave_runner.join import public_node_key
from ccpipe.schemas.nodes import NodeAttestation
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.node_join_nats import node_attestations_bucket


def attestation(node_id: str, key: Ed25519PrivateKey, tee: TeeType | str, *, emulated: bool,
                tcb: dict[str, int] | None = None) -> NodeAttestation:
    """The record of a verified join of ``node_id`` with ``key``."""
    return NodeAttestation(node_id=node_id, node_key=public_node_key(key), tee=TeeType(tee),
                           backend="emulated" if emulated else "hardware", emulated=emulated, tcb=tcb or {},
                           product="test", measurement="00" * 48, evidence_digest="sha256:" + "00" * 32,
                           attested_at=datetime.now(UTC), event_id="test")


async def record_attestation(js: JetStreamContext, record: NodeAttestation) -> None:
    """Store ``record`` under its node id, as the attestation service does after a verified join."""
    kv = await node_attestations_bucket(js)
    await kv.put(record.node_id, record.model_dump_json().encode())
