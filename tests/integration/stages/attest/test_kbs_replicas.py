"""KBS replicas sharing one NATS and one data directory: a handshake may hop between them, and a
nonce spent on one is spent on all. Also ``ccpipe kbs serve --workers 2`` end to end."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from joserfc.jwe import FlattenedJSONSerialization
from joserfc.jwe import decrypt_json as jwe_decrypt
from joserfc.jwk import ECKey
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.client import fetch_resource
from ccpipe.stages.attest.kbs.errors import ResourceStoreError
from ccpipe.stages.attest.kbs.service import open_kbs, serve_http
from ccpipe.stages.attest.kbs.store_nats import NatsNonceLedger
from tests.integration.stages.attest.test_kbs_rcar import SECRET, Harness, Raw, attestation, initdata_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def replicas(data_dir: Path, js: JetStreamContext) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two KBS replicas as two servers would run them: own HTTP, shared NATS KV and data dir."""
    EmulatedSnpBackend(data_dir)
    one, two = [await open_kbs(js, data_dir, allow_emulated=True) for _ in range(2)]
    async with serve_http(one) as url_one, serve_http(two) as url_two:
        admin = KbsAdminClient(url_one, load_admin_private_key(admin_key_paths(data_dir)[0]))
        yield Harness(url_one, one, admin, data_dir, js), Harness(url_two, two, admin, data_dir, js)


async def test_kbs_replicas_a_handshake_may_hop_between_them(replicas: tuple[Harness, Harness],
                                                             workload_id: str) -> None:
    a, b = replicas
    await a.register(workload_id)
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Raw(a.url, http), Raw(b.url, http)
        key = ECKey.generate_key("P-256", private=True)
        jwk = {**key.as_dict(private=False), "alg": "ECDH-ES+A256KW"}
        nonce = await on_a.auth(workload_id)  # challenge from replica A …
        on_b.cookie = on_a.cookie
        status, token = await on_b.post("attest", attestation(a.backend(workload_id), nonce, jwk, workload_id))
        assert status == 200 and token["token"]  # … answered on replica B
        attested = on_b.last_cookie
        on_a.cookie = attested
        status, jwe = await on_a.get(f"resource/ccpipe/{workload_id}/image-key")  # … key from A again
        sealed = cast(FlattenedJSONSerialization, jwe)  # the KBS answers a flattened JWE
        assert status == 200 and jwe_decrypt(sealed, key, algorithms=["ECDH-ES+A256KW", "A256GCM"]).plaintext == SECRET
        # the authed cookie replayed on A after B spent its nonce: refused on every replica
        on_a.cookie = on_b.cookie
        status, err = await on_a.post("attest", attestation(a.backend(workload_id), nonce, jwk, workload_id))
        assert status == 401 and "already used" in err["detail"]
    kinds = [e.type.value for e in await a.events(workload_id, challenges=True)]
    assert kinds == ["attestation.challenged", "attestation.verified", "key.released", "attestation.rejected"]


async def test_kbs_replicas_refuse_a_nonce_bucket_that_forgets_too_soon(js: JetStreamContext) -> None:
    bucket = "CCPIPE_KBS_NONCES_SHORT"
    await js.create_key_value(KeyValueConfig(bucket=bucket, storage=StorageType.FILE, history=1, ttl=30))
    with pytest.raises(ResourceStoreError, match="replayed"):
        await NatsNonceLedger.open(js, session_timeout_s=300, bucket=bucket)


SERVING = re.compile(r"(http://\S+)/kbs/v0 .* with 2 worker\(s\) \(pids (\d+), (\d+)\)")


def start_kbs_serve(data: Path, nats_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CCPIPE_NATS_URL": nats_url, "CCPIPE_DATA_DIR": str(data), "CCPIPE_ALLOW_EMULATED": "true"}
    return subprocess.Popen([sys.executable, "-m", "ccpipe", "kbs", "serve", "--workers", "2",
                             "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def serving(proc: subprocess.Popen[str]) -> tuple[str, list[int]]:
    """The URL and worker pids from the 'KBS serving' line (other output, e.g. warnings, skipped)."""
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(120):
        while True:
            line = await asyncio.to_thread(proc.stdout.readline)
            seen.append(line)
            if not line:
                raise AssertionError(f"ccpipe kbs serve exited: {''.join(seen)}")
            found = SERVING.search(line)
            if found:
                return found.group(1), [int(found.group(2)), int(found.group(3))]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for this machine's init to reap it has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def test_kbs_serve_with_two_workers_on_one_port(tmp_path: Path, nats_server: EmbeddedNats,
                                                      workload_id: str) -> None:
    data = tmp_path / "data"
    proc = start_kbs_serve(data, nats_server.url)
    try:
        assert proc.stdout is not None
        url, pids = await serving(proc)
        admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data)[0]))
        harness = Harness(url, None, admin, data, None)  # type: ignore[arg-type]  # no in-process KBS here
        await harness.register(workload_id)
        async with aiohttp.ClientSession() as http:
            for _ in range(12):  # fresh connections each time: the kernel spreads them over both workers
                async with aiohttp.ClientSession() as fresh:
                    key = await fetch_resource(url, harness.backend(workload_id), f"ccpipe/{workload_id}/image-key",
                                               workload_id=workload_id, tee="snp", init_data=initdata_for(workload_id),
                                               http=fresh)
                    assert key == SECRET
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200
        os.kill(pids[0], signal.SIGKILL)  # one worker dies: the whole KBS stops, non-zero
        assert await asyncio.to_thread(proc.wait, 30) == 3
        assert "worker exited" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_kbs_serve_workers_do_not_outlive_a_killed_parent(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    proc = start_kbs_serve(tmp_path / "data", nats_server.url)
    try:
        _, pids = await serving(proc)
        assert all(alive(p) for p in pids)
        proc.kill()  # SIGKILL: no chance to stop its workers itself
        proc.wait(10)
        async with asyncio.timeout(30):
            while any(alive(p) for p in pids):
                await asyncio.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
