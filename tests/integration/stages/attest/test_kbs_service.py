"""The service factory and the NATS KV resource backend, against the session's nats-server."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.client import fetch_resource
from ccpipe.stages.attest.kbs.errors import KbsRefused
from ccpipe.stages.attest.kbs.nats_service import NatsTransport
from ccpipe.stages.attest.kbs.service import serve_kbs
from ccpipe.stages.attest.kbs.store import FileKek, ResourceStore
from ccpipe.stages.attest.kbs.store_nats import BUCKET, NatsKvBackend
from ccpipe.stages.attest.rvps import sample_message
from tests.integration.stages.attest.test_kbs_rcar import SECRET, initdata_for, register_requirements

pytestmark = pytest.mark.integration


async def test_kbs_service_factory_serves_the_embedded_kbs_and_keys_survive_a_restart(
    data_dir: Path, nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str
) -> None:
    settings = Settings(data_dir=data_dir, nats_url=nats_server.url, allow_emulated=True)
    backend = EmulatedSnpBackend(data_dir, host_data=initdata_digest(initdata_for(workload_id).decode()))
    endpoints = Endpoints(nats_url=nats_server.url)
    async with serve_kbs(settings, endpoints) as eps:
        assert eps.kbs_url and eps.kbs_url.startswith("http://127.0.0.1:")
        assert admin_key_paths(data_dir)[1].exists()  # admin key pair created on first embedded start
        admin = KbsAdminClient(eps.kbs_url, load_admin_private_key(admin_key_paths(data_dir)[0]),
                               role="resource-writer")
        await admin.set_resource(f"ccpipe/{workload_id}/image-key", SECRET)
        await register_requirements(admin, workload_id)
        policy_admin = KbsAdminClient(eps.kbs_url, load_admin_private_key(admin_key_paths(data_dir)[0]),
                                      role="policy-admin")
        await policy_admin.set_reference_values(sample_message({
            f"scope/{workload_id}/init_data_digest": [initdata_digest(initdata_for(workload_id).decode()).hex()],
            f"scope/{workload_id}/snp_launch_measurement": [backend.measurement.hex()],
        }))
        first_url = eps.kbs_url
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{first_url}/healthz")  # stopped with its block
    # A new KBS (a restart, or another replica) finds the sealed key in the KV bucket.
    async with serve_kbs(settings, endpoints) as eps:
        assert eps.kbs_url
        key = await fetch_resource(eps.kbs_url, backend, f"ccpipe/{workload_id}/image-key", workload_id=workload_id,
                                   tee="snp", init_data=initdata_for(workload_id))
    assert key == SECRET
    kv = await js.key_value(BUCKET)
    raw = await NatsKvBackend(kv).get(f"ccpipe/{workload_id}/image-key")
    assert raw is not None and SECRET not in raw  # sealed at rest in NATS too
    store = ResourceStore(NatsKvBackend(kv), FileKek.for_data_dir(data_dir))
    assert await store.get(f"ccpipe/{workload_id}/image-key") == SECRET


async def test_kbs_service_factory_with_an_external_kbs_starts_nothing(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, nats_url="nats://127.0.0.1:1", kbs_url="http://kbs.example:8080")
    async with serve_kbs(settings, Endpoints(nats_url="nats://127.0.0.1:1")) as eps:
        assert eps.kbs_url == "http://kbs.example:8080"
    assert not admin_key_paths(data_dir)[0].exists()


async def test_kbs_rcar_over_nats_releases_and_refuses_like_http(
    data_dir: Path, nats_server: EmbeddedNats, nc: NatsClient, js: JetStreamContext, workload_id: str
) -> None:
    settings = Settings(data_dir=data_dir, nats_url=nats_server.url, allow_emulated=True)
    backend = EmulatedSnpBackend(data_dir, host_data=initdata_digest(initdata_for(workload_id).decode()))
    async with serve_kbs(settings, Endpoints(nats_url=nats_server.url)) as eps:
        assert eps.kbs_url
        admin = KbsAdminClient(eps.kbs_url, load_admin_private_key(admin_key_paths(data_dir)[0]))
        await admin.set_resource(f"ccpipe/{workload_id}/image-key", SECRET)
        await register_requirements(admin, workload_id)
        await admin.set_reference_values(sample_message({
            f"scope/{workload_id}/init_data_digest": [initdata_digest(initdata_for(workload_id).decode()).hex()],
            f"scope/{workload_id}/snp_launch_measurement": [backend.measurement.hex()],
        }))
        transport = NatsTransport(nc)
        key = await fetch_resource("nats", backend, f"ccpipe/{workload_id}/image-key", workload_id=workload_id,
                                   tee="snp", init_data=initdata_for(workload_id), transport=transport)
        assert key == SECRET
        with pytest.raises(KbsRefused) as info:  # no initdata registered for this one
            await fetch_resource("nats", backend, f"ccpipe/{workload_id}-x/image-key",
                                 workload_id=f"{workload_id}-x", tee="snp", transport=transport)
        assert info.value.status == 401
    kinds = [e.event.type.value for e in await read_events(js, workload_id) if e.event]
    assert kinds == ["attestation.challenged", "attestation.verified", "key.released"]
    assert [e.event.type.value for e in await read_events(js, f"{workload_id}-x") if e.event] == [
        "attestation.challenged", "attestation.rejected"]


async def test_kbs_resource_bucket_is_read_by_direct_get_and_an_older_bucket_is_switched(
    js: JetStreamContext, workload_id: str
) -> None:
    fresh, older = f"KBS_FRESH_{workload_id}", f"KBS_OLD_{workload_id}"
    await NatsKvBackend.open(js, fresh)
    assert (await js.stream_info(f"KV_{fresh}")).config.allow_direct is True
    # A bucket as an earlier ccpipe made it (no direct get), already holding a record.
    kv = await js.create_key_value(KeyValueConfig(bucket=older, storage=StorageType.FILE, history=1))
    assert not (await js.stream_info(f"KV_{older}")).config.allow_direct
    await NatsKvBackend(kv).put("ccpipe/w/image-key", b"sealed record")
    backend = await NatsKvBackend.open(js, older)
    info = await js.stream_info(f"KV_{older}")
    assert info.config.allow_direct is True and info.state.messages == 1  # switched, nothing lost
    assert await backend.get("ccpipe/w/image-key") == b"sealed record"
    assert await backend.get("ccpipe/w/other") is None


def _non_loopback_ipv4() -> str:
    """An IPv4 address of this host that is not loopback (the netns tests need iproute2 anyway)."""
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True).stdout)
    found = [a["local"] for link in addrs for a in link.get("addr_info", []) if not a["local"].startswith("127.")]
    if not found:
        pytest.fail("this host has no non-loopback IPv4 address to reach a listener through")
    return str(found[0])


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "0.0.0.0"])
async def test_the_kbs_listens_where_ccpipe_listen_host_says(
    listen_host: str, data_dir: Path, nats_server: EmbeddedNats
) -> None:
    """Loopback by default (nothing exposed unasked); ``CCPIPE_LISTEN_HOST=0.0.0.0`` lets other
    hosts reach ``ccpipe serve kbs``, and the URL it reports names this host, not the wildcard."""
    settings = Settings(data_dir=data_dir, nats_url=nats_server.url, allow_emulated=True, listen_host=listen_host)
    async with serve_kbs(settings, Endpoints(nats_url=nats_server.url)) as eps, aiohttp.ClientSession() as http:
        assert eps.kbs_url is not None
        port = eps.kbs_url.rsplit(":", 1)[1]
        from_outside = f"http://{_non_loopback_ipv4()}:{port}/healthz"
        if listen_host == "0.0.0.0":
            assert eps.kbs_url == f"http://{socket.gethostname()}:{port}"
            async with http.get(from_outside) as resp:
                assert resp.status == 200
        else:
            assert eps.kbs_url.startswith("http://127.0.0.1:")
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(from_outside, timeout=aiohttp.ClientTimeout(total=5))
