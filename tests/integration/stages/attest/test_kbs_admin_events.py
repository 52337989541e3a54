"""Every administrative change to the KBS is a ``kbs.admin.changed`` event stored before the
change is made; a refused change leaves no event; no trail, no change."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import connect, provision_stream
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.audit import ADMIN_WORKLOAD
from ccpipe.stages.attest.kbs.errors import KbsRefused, KbsUnavailable
from ccpipe.stages.attest.kbs.service import build_kbs, publisher_for, serve_http
from ccpipe.stages.attest.kbs.store import FileBackend
from ccpipe.stages.attest.policy_text import builtin_policy_text, policy_digest
from ccpipe.stages.attest.rvps import sample_message
from tests.integration.stages.attest import test_kbs_rcar as rcar
from tests.integration.stages.attest.test_kbs_rcar import Harness

pytestmark = pytest.mark.integration
kbs = rcar.kbs
SECRET = b"do-not-log-me-" + b"\x07" * 18


async def admin_events(js: JetStreamContext, since: int) -> list[dict[str, object]]:
    found = [e.event for e in await read_events(js, ADMIN_WORKLOAD) if e.event is not None]
    return [e.payload.model_dump() for e in found[since:]]


async def test_kbs_admin_changes_are_events_and_the_secret_is_not_in_them(kbs: Harness, workload_id: str) -> None:
    before = len(await admin_events(kbs.js, 0))
    path = f"ccpipe/{workload_id}/image-key"
    await kbs.admin.set_resource(path, SECRET)
    policy = builtin_policy_text("resource", "default")
    assert policy is not None
    kept = await kbs.admin.set_policy(policy, prefix=f"ccpipe/{workload_id}")
    await kbs.admin.set_reference_values(sample_message({"snp_launch_measurement": ["ab" * 48]}), scope=workload_id)
    await kbs.admin.delete_resource(path)
    events = await admin_events(kbs.js, before)
    assert [(e["action"], e["target"]) for e in events] == [
        ("resource.set", path), ("resource-policy.set", kept["policy_id"]),
        ("reference-values.set", workload_id), ("resource.deleted", path)]
    assert all(e["role"] == "admin" and e["admin"] == "ccpipe" and e["token_id"] for e in events)
    assert events[0]["detail"] == {"size": str(len(SECRET))}
    assert events[1]["detail"] == {"policy_id": kept["policy_id"], "policy_digest": policy_digest(policy),
                                   "prefix": f"ccpipe/{workload_id}"}
    assert events[2]["detail"] == {"names": f"scope/{workload_id}/snp_launch_measurement"}
    raw = b"".join(e.data for e in await read_events(kbs.js, ADMIN_WORKLOAD))
    for form in (SECRET, base64.b64encode(SECRET), SECRET.hex().encode()):
        assert form not in raw


async def test_kbs_admin_refused_change_leaves_no_event_and_no_change(kbs: Harness, workload_id: str) -> None:
    before = len(await admin_events(kbs.js, 0))
    with pytest.raises(KbsRefused) as info:
        await kbs.admin.set_policy("package policy\nthis is not rego", kind="attestation", policy_id="broken")
    assert info.value.status == 400
    with pytest.raises(KbsRefused):
        await kbs.admin.set_reference_values({"version": "0.1.0", "type": "sample", "payload": "%%%"})
    with pytest.raises(KbsRefused):  # nothing to delete
        await kbs.admin.delete_resource(f"ccpipe/{workload_id}/nothing")
    writer = KbsAdminClient(kbs.url, load_admin_private_key(admin_key_paths(kbs.data_dir)[0]), role="policy-admin")
    with pytest.raises(KbsRefused):  # a role that may not write resources
        await writer.set_resource(f"ccpipe/{workload_id}/image-key", b"x")
    assert await admin_events(kbs.js, before) == []


async def test_kbs_admin_no_change_without_the_trail(data_dir: Path, tmp_path: Path, workload_id: str) -> None:
    server = EmbeddedNats(tmp_path / "own-nats").start()
    nc = await connect(server.url, name="kbs-admin-test")
    try:
        await provision_stream(nc.jetstream())
        built = build_kbs(data_dir, publisher_for(nc.jetstream(), data_dir), FileBackend(data_dir / "res"),
                          allow_emulated=True)
        async with serve_http(built) as url:
            admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
            server.stop()  # the trail is gone
            with pytest.raises(KbsUnavailable, match="503"):
                await admin.set_resource(f"ccpipe/{workload_id}/image-key", SECRET)
            assert await built.admin.store.get(f"ccpipe/{workload_id}/image-key") is None
            policy = builtin_policy_text("attestation", "default")
            assert policy is not None
            with pytest.raises(KbsUnavailable, match="503"):
                await admin.set_policy(policy, kind="attestation", policy_id="mine")
            assert not (data_dir / "attest" / "policies" / "attestation" / "mine.json").exists()
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            await nc.close()
