"""A key release is attributed to the node the session proves, not to the name the client sends (issue 19, item 8).

A real KBS over HTTP, its events and the node attestation records in a real nats-server. Two
runner nodes have joined (their records hold their node keys). The honest runner proves its
node with its key; a client that names the other node, without that node's key, gets its key
(the enclave's evidence is valid) but the release names no node and keeps the name as an
unproven claim, in the event and in the audit index's row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.pipeline.audit.fields import extract_event
from ccpipe.schemas.events import KeyReleased
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.node_join_nats import attested_node_keys, node_attestations_bucket
from ccpipe.stages.attest.kbs.service import build_kbs, publisher_for, serve_http
from ccpipe.stages.attest.kbs.store import FileBackend
from tests.attested_nodes import attestation, record_attestation
from tests.integration.stages.attest.test_kbs_rcar import SECRET, Harness, types
from tests.integration.stages.deploy.node_helpers import unique

pytestmark = pytest.mark.integration


@pytest.fixture
async def kbs(data_dir: Path, js: JetStreamContext) -> AsyncIterator[Harness]:
    """An embedded KBS that checks node proofs against ``CCPIPE_NODE_ATTESTATIONS``."""
    EmulatedSnpBackend(data_dir)  # the emulated PKI exists before the verifier looks for it
    kbs = build_kbs(data_dir, publisher_for(js, data_dir), FileBackend(data_dir / "kbs-resources"),
                    allow_emulated=True, node_keys=attested_node_keys(await node_attestations_bucket(js)))
    async with serve_http(kbs) as url:
        admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
        yield Harness(url, kbs, admin, data_dir, js)


async def joined(js: JetStreamContext, name: str) -> tuple[str, Ed25519PrivateKey]:
    """A node that joined: its attestation record holds its key."""
    node_id, key = unique(name), Ed25519PrivateKey.generate()
    await record_attestation(js, attestation(node_id, key, TeeType.SNP, emulated=True))
    return node_id, key


async def release(kbs: Harness, workload: str, **kw: Any) -> KeyReleased:
    """Fetch the workload's image key in one session; the payload of the ``key.released`` it caused."""
    async with await kbs.session(workload, **kw) as session:
        assert await session.get_resource(f"ccpipe/{workload}/image-key") == SECRET
    events = await kbs.events(workload)
    assert types(events) == ["attestation.verified", "key.released"]
    verified, released = events
    assert isinstance(released.payload, KeyReleased)
    # the attestation and the release agree on who asked
    assert (verified.payload.node_id, verified.payload.claimed_node_id) == (
        released.payload.node_id, released.payload.claimed_node_id)
    assert released.subject.node == released.payload.node_id
    row = extract_event(released)
    assert row.fields.get("node_id") == released.payload.node_id
    assert row.fields.get("claimed_node_id") == released.payload.claimed_node_id
    return released.payload


async def test_a_release_names_the_node_its_key_proves(kbs: Harness, js: JetStreamContext) -> None:
    node, key = await joined(js, "honest")
    workload = unique("w")
    await kbs.register(workload)
    released = await release(kbs, workload, node_id=node, node_signer=key.sign)
    assert (released.node_id, released.claimed_node_id) == (node, None)


async def test_a_client_that_claims_another_nodes_name_is_not_credited_with_it(
    kbs: Harness, js: JetStreamContext
) -> None:
    victim, _ = await joined(js, "victim")
    liar, liar_key = await joined(js, "liar")
    # names the victim and signs with its own (attested) key: the proof does not show the victim
    workload = unique("w")
    await kbs.register(workload)
    released = await release(kbs, workload, node_id=victim, node_signer=liar_key.sign)
    assert (released.node_id, released.claimed_node_id) == (None, victim)
    assert liar not in (released.node_id, released.claimed_node_id)
    # names the victim with no proof at all (what a client without any node key can do)
    workload = unique("w")
    await kbs.register(workload)
    released = await release(kbs, workload, node_id=victim)
    assert (released.node_id, released.claimed_node_id) == (None, victim)


async def test_a_name_that_never_joined_is_only_a_claim(kbs: Harness) -> None:
    workload = unique("w")
    await kbs.register(workload)
    ghost_key = Ed25519PrivateKey.generate()
    released = await release(kbs, workload, node_id=unique("ghost"), node_signer=ghost_key.sign)
    assert released.node_id is None and released.claimed_node_id is not None
