"""Bearer token and Basic auth (through a small auth proxy), and TLS with a private CA."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.oci.registry import Credentials, RegistryClient, pull_to_layout, push_layout
from ccpipe.oci.registry.errors import RegistryAuthError, RegistryTlsError
from ccpipe.pipeline.servers import EmbeddedRegistry, _stop, free_port
from tests.integration.oci.registry.registry_fakes import start_auth_proxy
from tests.integration.oci.registry.registry_images import all_blob_files, make_image
from tests.private_ca import write_ca_and_server_cert

pytestmark = pytest.mark.integration

GOOD = Credentials("alice", "s3cret")


async def test_bearer_token_auth_push_and_pull(registry_server: EmbeddedRegistry, repo: str, tmp_path: Path) -> None:
    proxy = await start_auth_proxy(registry_server.address, "bearer")
    digest = make_image(tmp_path / "src", "v1")
    async with RegistryClient(proxy.address, plain_http=True, credentials=GOOD) as c:
        assert await push_layout(c, tmp_path / "src", repo, "v1") == digest
        await pull_to_layout(c, repo, "v1", tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")
    # one token per scope (push, pull), not one per request
    assert len(proxy.token_requests) == 2
    assert "service=fake-registry" in proxy.token_requests[0]
    assert f"scope=repository:{repo}:pull,push" in proxy.token_requests[0]


async def test_bearer_token_refused_for_a_wrong_password(registry_server: EmbeddedRegistry, repo: str) -> None:
    proxy = await start_auth_proxy(registry_server.address, "bearer")
    async with RegistryClient(proxy.address, plain_http=True, credentials=Credentials("alice", "wrong")) as c:
        with pytest.raises(RegistryAuthError, match="token service"):
            await c.list_tags(repo)


async def test_basic_auth_push_and_refusals(registry_server: EmbeddedRegistry, repo: str, tmp_path: Path) -> None:
    proxy = await start_auth_proxy(registry_server.address, "basic")
    digest = make_image(tmp_path, "v1")
    async with RegistryClient(proxy.address, plain_http=True, credentials=GOOD) as c:
        assert await push_layout(c, tmp_path, repo, "v1") == digest
    async with RegistryClient(proxy.address, plain_http=True) as anonymous:
        with pytest.raises(RegistryAuthError, match="none were configured"):
            await anonymous.manifest_digest(repo, "v1")
    async with RegistryClient(proxy.address, plain_http=True, credentials=Credentials("alice", "no")) as wrong:
        with pytest.raises(RegistryAuthError, match="refused the credentials"):
            await wrong.manifest_digest(repo, "v1")


# --- TLS with a private CA ---------------------------------------------------------------------


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A docker-registry serving HTTPS with a certificate from a fresh private CA."""
    ca, cert, key = write_ca_and_server_cert(tmp_path)
    port = free_port()
    conf = tmp_path / "config.yml"
    conf.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(tmp_path / 'data'))}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls:\n"
        f"    certificate: {json.dumps(str(cert))}\n    key: {json.dumps(str(key))}\n"
    )
    log = tmp_path / "registry.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(conf)], stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
    try:
        # readiness over plain TCP: the HTTPS listener answers a plain request with 400
        import socket
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", ca
    finally:
        _stop(proc)


async def test_tls_registry_is_trusted_only_with_its_ca(tls_registry: tuple[str, Path], tmp_path: Path) -> None:
    address, ca = tls_registry
    digest = make_image(tmp_path / "src", "v1")
    async with RegistryClient(address, ca_file=ca) as c:
        assert await push_layout(c, tmp_path / "src", "tls/repo", "v1") == digest
        await pull_to_layout(c, "tls/repo", "v1", tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")
    async with RegistryClient(address) as untrusting:
        with pytest.raises(RegistryTlsError, match=f"registry {address}"):
            await untrusting.ping()
    with pytest.raises(RegistryTlsError, match="CA file"):
        RegistryClient(address, ca_file=tmp_path / "absent.pem")
