"""Malformed bodies, a dead event bus, and the admin API's authentication, over real HTTP."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.jwk import OKPKey

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.pipeline.bus import connect, provision_stream
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key, mint_admin_token
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.errors import KbsRefused, KbsUnavailable
from ccpipe.stages.attest.kbs.service import build_kbs, publisher_for, serve_http
from ccpipe.stages.attest.kbs.store import FileBackend
from tests.integration.stages.attest import test_kbs_rcar as rcar
from tests.integration.stages.attest.test_kbs_rcar import Harness, Raw, attestation, ec_jwk, types

pytestmark = pytest.mark.integration
kbs = rcar.kbs  # the fixture: a KBS on loopback with its events in the session's nats-server


async def test_kbs_malformed_bodies_get_4xx_and_an_event_and_the_service_keeps_serving(
    kbs: Harness, workload_id: str
) -> None:
    await kbs.register(workload_id)
    backend = kbs.backend(workload_id)
    async with aiohttp.ClientSession() as http:
        raw = Raw(kbs.url, http)
        # garbage JSON to /auth: nothing is known about the requester
        async with http.post(f"{kbs.url}/kbs/v0/auth", data=b"{not json") as resp:
            assert resp.status == 400 and (await resp.json())["type"].endswith("/SerdeError")
        # a truncated report
        body = attestation(backend, await raw.auth(workload_id), ec_jwk(), workload_id)
        report = body["tee-evidence"]["primary_evidence"]["attestation_report"]
        report["signature"]["r"] = report["signature"]["r"][:10]
        status, err = await raw.post("attest", body)
        assert status == 401 and err["type"].endswith("/AttestationError"), err
        # wrong lengths: a 31-byte EC coordinate
        jwk = ec_jwk()
        jwk["x"] = jwk["x"][:-2]
        status, err = await raw.post("attest", attestation(backend, await raw.auth(workload_id), jwk, workload_id))
        assert status == 401 and err["type"].endswith("/JweError")
        # garbage JSON to /attest
        await raw.auth(workload_id)
        status, err = await raw.post("attest", b"\x00\xff garbage")
        assert status == 400 and err["type"].endswith("/SerdeError")
        # 10 MB body
        await raw.auth(workload_id)
        status, err = await raw.post("attest", b"{" + b" " * (10 << 20) + b"}")
        assert status == 413 and err["type"].endswith("/SerdeError")
        # the version check
        async with http.post(f"{kbs.url}/kbs/v0/auth", json={"version": "0.1.1", "tee": "snp"}) as resp:
            assert resp.status == 401 and "Version Mismatch" in (await resp.json())["detail"]
        # an unknown endpoint and a traversal attempt
        async with http.get(f"{kbs.url}/kbs/v0/nothing-here") as resp:
            assert resp.status == 404 and (await resp.json())["type"].endswith("/InvalidRequestPath")
        status, _ = await raw.get(f"resource/ccpipe/{workload_id}/..%2f..%2fkek")
        assert status == 404
    challenges = len(await kbs.events(workload_id, challenges=True)) - len(await kbs.events(workload_id))
    assert challenges == 4  # one per /auth
    events = await kbs.events(workload_id)
    codes = [e.payload.reason.code for e in events]
    assert codes[-1] == "kbs.path.invalid" and events[-1].type.value == "key.denied"
    assert codes[:-1] == ["attest.evidence.malformed", "kbs.tee_pubkey.invalid", "kbs.body.malformed",
                     "kbs.body.too_large"]  # one event each: truncated, wrong length, garbage, 10 MB
    unscoped = types(await kbs.events("kbs-unscoped"))
    assert "attestation.rejected" in unscoped  # garbage /auth and version mismatch are recorded too
    # still serving
    async with await kbs.session(workload_id) as s:
        assert await s.get_resource(f"ccpipe/{workload_id}/image-key") == b"\x42" * 32


async def test_kbs_no_key_without_the_event_bus(data_dir: Path, tmp_path: Path, workload_id: str) -> None:
    server = EmbeddedNats(tmp_path / "own-nats").start()
    nc = await connect(server.url, name="kbs-test")
    try:
        js = nc.jetstream()
        await provision_stream(js)
        EmulatedSnpBackend(data_dir)
        built = build_kbs(data_dir, publisher_for(js, data_dir), FileBackend(data_dir / "res"), allow_emulated=True)
        async with serve_http(built) as url:
            harness = Harness(url, built, KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0])),
                              data_dir, js)
            await harness.register(workload_id)
            async with await harness.session(workload_id) as s:
                await s.attest()
                server.stop()  # the trail is gone: nothing may be released
                with pytest.raises(KbsUnavailable, match="503"):
                    await s.get_resource(f"ccpipe/{workload_id}/image-key")
            # a new handshake is refused too (its attestation cannot be recorded)
            with pytest.raises(KbsUnavailable):
                async with await harness.session(workload_id) as s2:
                    await s2.attest()
    finally:
        server.stop()
        with contextlib.suppress(OSError):  # the server is gone: closing cannot flush
            await nc.close()


def _token(key: Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "EdDSA"}, claims, OKPKey.import_key(key), algorithms=["EdDSA"])


async def test_kbs_admin_refuses_missing_invalid_expired_and_wrong_role_tokens(kbs: Harness, workload_id: str) -> None:
    key = load_admin_private_key(admin_key_paths(kbs.data_dir)[0])
    path = f"{kbs.url}/kbs/v0/resource/ccpipe/{workload_id}/image-key"
    now = int(time.time())
    cases = {
        "missing": None,
        "not a jwt": "Bearer abc.def.ghi",
        "other key": "Bearer " + mint_admin_token(Ed25519PrivateKey.generate(), "admin"),
        "expired": "Bearer " + _token(key, {"role": "admin", "exp": now - 10}),
        "no exp": "Bearer " + _token(key, {"role": "admin"}),
        "wrong role": "Bearer " + mint_admin_token(key, "policy-admin"),
        "unknown role": "Bearer " + mint_admin_token(key, "root"),
    }
    async with aiohttp.ClientSession() as http:
        for name, header in cases.items():
            headers = {"Authorization": header} if header else {}
            async with http.put(path, data=b"stolen", headers=headers) as resp:
                assert resp.status == 401, name
                assert (await resp.json())["type"].endswith("/AdminAuthAccess"), name
        writer = "Bearer " + mint_admin_token(key, "resource-writer")
        async with http.put(path, data=b"ok", headers={"Authorization": writer}) as resp:
            assert resp.status == 200
        async with http.post(f"{kbs.url}/kbs/v0/resource-policy", data=b"{}",
                             headers={"Authorization": writer}) as resp:
            assert resp.status == 401  # a resource writer may not change policies
    with pytest.raises(KbsRefused) as info:
        await KbsAdminClient(kbs.url, key, role="policy-admin").set_resource(f"ccpipe/{workload_id}/x", b"1")
    assert info.value.variant == "AdminAuthAccess"


async def test_kbs_scoped_resource_policy_denies_and_names_its_rule(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    deny = "package policy\nimport rego.v1\ndefault allow := false\nviolations contains \"closed: by test\" if true\n"
    result = await kbs.admin.set_policy(deny, prefix=f"ccpipe/{workload_id}")
    assert result["policy_digest"]
    async with await kbs.session(workload_id) as s:
        with pytest.raises(KbsRefused) as info:
            await s.get_resource(f"ccpipe/{workload_id}/image-key")
    assert info.value.variant == "PolicyDeny" and "closed" not in str(info.value)
    denied = (await kbs.events(workload_id))[-1]
    assert denied.payload.rule and "closed" in denied.payload.rule


async def test_kbs_admin_round_trips(kbs: Harness, workload_id: str) -> None:
    key = load_admin_private_key(admin_key_paths(kbs.data_dir)[0])
    policy_admin = KbsAdminClient(kbs.url, key, role="policy-admin")
    stored = await policy_admin.set_reference_values(
        {"version": "0.1.0", "type": "sample", "payload": "eyJzdmwiOiBbIjEiXX0="}, scope=workload_id)  # {"svl": ["1"]}
    assert stored
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": "Bearer " + mint_admin_token(key, "policy-admin")}
        async with http.get(f"{kbs.url}/kbs/v0/reference-value/svl", params={"scope": workload_id},
                            headers=auth) as resp:
            assert resp.status == 200 and await resp.json() == ["1"]
        async with http.post(f"{kbs.url}/kbs/v0/reference-value", data=b'{"version":"9"}', headers=auth) as resp:
            assert resp.status == 400 and (await resp.json())["type"].endswith("/SerdeError")
    allow = "package policy\nimport rego.v1\ndefault allow := true\n"
    await policy_admin.set_policy(allow, prefix=f"ccpipe/{workload_id}", policy_id=f"p-{workload_id}")
    with pytest.raises(KbsRefused) as info:
        await policy_admin.set_policy("package policy\nthis is not rego", prefix="x")
    assert info.value.status == 400
    await kbs.admin.set_resource(f"ccpipe/{workload_id}/tmp", b"1")
    await kbs.admin.delete_resource(f"ccpipe/{workload_id}/tmp")
    with pytest.raises(KbsRefused) as info:
        await kbs.admin.delete_resource(f"ccpipe/{workload_id}/tmp")
    assert info.value.status == 404
