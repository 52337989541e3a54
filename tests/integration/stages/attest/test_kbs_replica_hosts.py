"""KBS replicas on different hosts: each its own data directory, the shared keys from one
``CCPIPE_KBS_KEYS_DIR`` (what a Kubernetes Secret mounts in every pod). A handshake hops between
them; a replica without the shared keys cannot continue it, and one whose keys directory lacks a
file refuses to start instead of making keys of its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwe import FlattenedJSONSerialization
from joserfc.jwe import decrypt_json as jwe_decrypt
from joserfc.jwk import ECKey
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.enrolled_roots import decode_public_roots, export_public_roots, replace_vouched_roots
from ccpipe.pipeline.keyfiles import KeyMaterialError
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, ensure_admin_keypair, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.errors import ResourceStoreError
from ccpipe.stages.attest.kbs.key_dir import KEYS_DIR_ENV, create_kbs_keys
from ccpipe.stages.attest.kbs.service import open_kbs, serve_http
from ccpipe.stages.attest.kbs.sessions import SessionStore
from ccpipe.stages.attest.kbs.store import FileKek
from tests.integration.stages.attest.test_kbs_rcar import SECRET, Harness, Raw, attestation

pytestmark = pytest.mark.integration


def _admin_public_pem(data_dir: Path) -> bytes:
    return ensure_admin_keypair(data_dir).public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
async def hosts(tmp_path: Path, js: JetStreamContext,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two KBS replicas with their own data directories and one shared keys directory."""
    admin_home, one_dir, two_dir = (tmp_path / name for name in ("admin", "host-a", "host-b"))
    create_kbs_keys(tmp_path / "secret", _admin_public_pem(admin_home))
    monkeypatch.setenv(KEYS_DIR_ENV, str(tmp_path / "secret"))
    EmulatedSnpBackend(one_dir)  # the guests' platform; host B is told of its roots as an enrolment would
    roots = decode_public_roots(export_public_roots(one_dir), "host A")
    replace_vouched_roots(two_dir, {"runner-hostakey": roots})
    one = await open_kbs(js, one_dir, allow_emulated=True)
    two = await open_kbs(js, two_dir, allow_emulated=True)
    async with serve_http(one) as url_one, serve_http(two) as url_two:
        admin = KbsAdminClient(url_two, load_admin_private_key(admin_key_paths(admin_home)[0]))
        yield Harness(url_one, one, admin, one_dir, js), Harness(url_two, two, admin, one_dir, js)


async def test_kbs_replicas_on_two_hosts_share_sessions_tokens_and_resources(
    hosts: tuple[Harness, Harness], workload_id: str, tmp_path: Path
) -> None:
    a, b = hosts
    await a.register(workload_id)  # through host B's admin API, with the administrator's key
    assert not (tmp_path / "host-a" / "keys" / "kbs").exists()  # no replica made keys of its own
    async with aiohttp.ClientSession() as http:
        on_a, on_b = Raw(a.url, http), Raw(b.url, http)
        key = ECKey.generate_key("P-256", private=True)
        jwk = {**key.as_dict(private=False), "alg": "ECDH-ES+A256KW"}
        nonce = await on_a.auth(workload_id)  # challenge from host A …
        on_b.cookie = on_a.cookie
        status, token = await on_b.post("attest", attestation(a.backend(workload_id), nonce, jwk, workload_id))
        assert status == 200 and token["token"], token  # … answered on host B
        on_a.cookie = on_b.last_cookie
        status, jwe = await on_a.get(f"resource/ccpipe/{workload_id}/image-key")  # … the key from A
        sealed = cast(FlattenedJSONSerialization, jwe)
        assert status == 200 and jwe_decrypt(sealed, key, algorithms=["ECDH-ES+A256KW", "A256GCM"]).plaintext == SECRET
        # B's token alone (Bearer, no cookie) is honoured by A
        async with http.get(f"{a.url}/kbs/v0/resource/ccpipe/{workload_id}/image-key",
                            headers={"Authorization": f"Bearer {token['token']}"}) as resp:
            assert resp.status == 200


async def test_a_replica_without_the_shared_keys_cannot_continue_a_handshake(
    hosts: tuple[Harness, Harness], workload_id: str, tmp_path: Path, js: JetStreamContext,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = hosts
    await a.register(workload_id)
    monkeypatch.delenv(KEYS_DIR_ENV)
    stray_dir = tmp_path / "host-c"
    replace_vouched_roots(stray_dir, {"runner-hostakey": decode_public_roots(export_public_roots(a.data_dir), "A")})
    stray = await open_kbs(js, stray_dir, allow_emulated=True)  # keys of its own in its data directory
    async with serve_http(stray) as url_c, aiohttp.ClientSession() as http:
        on_a, on_c = Raw(a.url, http), Raw(url_c, http)
        key = ECKey.generate_key("P-256", private=True)
        jwk = {**key.as_dict(private=False), "alg": "ECDH-ES+A256KW"}
        nonce = await on_a.auth(workload_id)
        on_c.cookie = on_a.cookie
        status, err = await on_c.post("attest", attestation(a.backend(workload_id), nonce, jwk, workload_id))
        assert status == 401, err  # the cookie does not open under another session key


def test_a_keys_directory_missing_a_file_is_refused_naming_it(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "secret"
    create_kbs_keys(keys, _admin_public_pem(tmp_path / "admin"))
    with pytest.raises(KeyMaterialError, match="already exist"):
        create_kbs_keys(keys, b"")  # never replaced
    (keys / "session.key").unlink()
    monkeypatch.setenv(KEYS_DIR_ENV, str(keys))
    with pytest.raises(KeyMaterialError, match=r"session\.key cannot be read"):
        SessionStore.for_data_dir(tmp_path / "data")
    assert not (keys / "session.key").exists() and not (tmp_path / "data").exists()
    (keys / "kek").chmod(0o644)
    with pytest.raises((KeyMaterialError, ResourceStoreError), match="every user|readable by others"):
        FileKek.for_data_dir(tmp_path / "data")


def test_ccpipe_kbs_keys_writes_the_shared_keys_once(tmp_path: Path) -> None:
    env = {"CCPIPE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "ccpipe", "kbs", "keys", str(tmp_path / "secret")]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in (tmp_path / "secret").iterdir())
    assert names == ["admin.pub", "kek", "session.key", "token.key"]
    assert all((tmp_path / "secret" / n).stat().st_mode & 0o777 == 0o600 for n in names)
    assert (tmp_path / "secret" / "admin.pub").read_bytes() == _admin_public_pem(tmp_path / "data")
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 3 and "already exist" in again.stderr and "Traceback" not in again.stderr
    shutil.rmtree(tmp_path / "secret")
