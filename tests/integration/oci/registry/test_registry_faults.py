"""Faults: a registry killed mid-push, a registry that lies, 5xx/429 answers, refusals."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from ccpipe.oci.registry import RegistryClient, RetryPolicy, pull_to_layout, push_layout
from ccpipe.oci.registry.errors import (
    BlobMissing,
    DigestMismatch,
    RegistryDenied,
    RegistryRateLimited,
    RegistryServerError,
    RegistryTransientError,
)
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.schemas.errors import TransientError
from tests.integration.oci.registry.registry_fakes import serve
from tests.integration.oci.registry.registry_images import all_blob_files, make_image, make_raw_blob_image

pytestmark = pytest.mark.integration

KiB = 1024


async def _kill_after_chunks(client: RegistryClient, server: EmbeddedRegistry, chunks: int) -> None:
    while client.stats.chunks_uploaded < chunks:
        await asyncio.sleep(0.002)
    await asyncio.to_thread(server.kill)


async def test_registry_killed_mid_push_then_restarted_ends_in_a_complete_image(
    registry_server: EmbeddedRegistry, repo: str, tmp_path: Path
) -> None:
    digest = make_raw_blob_image(tmp_path / "src", "v1", 16 * 1024 * KiB)
    policy = RetryPolicy(attempts=12, initial_wait=0.2, max_wait=1.5)
    async with RegistryClient(registry_server.address, plain_http=True, chunk_size=64 * KiB, retry=policy) as c:

        async def chaos() -> None:
            await _kill_after_chunks(c, registry_server, 5)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(registry_server.start)

        killer = asyncio.create_task(chaos())
        pushed = await push_layout(c, tmp_path / "src", repo, "v1")
        await killer
        assert pushed == digest
        assert c.stats.retries >= 1  # the kill really hit the push
        await pull_to_layout(c, repo, "v1", tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")


async def test_registry_that_stays_down_gives_a_transient_error_and_no_manifest(
    registry_server: EmbeddedRegistry, repo: str, tmp_path: Path
) -> None:
    make_raw_blob_image(tmp_path, "v1", 8 * 1024 * KiB)
    policy = RetryPolicy(attempts=3, initial_wait=0.05, max_wait=0.1)
    try:
        async with RegistryClient(registry_server.address, plain_http=True, chunk_size=64 * KiB, retry=policy) as c:
            killer = asyncio.create_task(_kill_after_chunks(c, registry_server, 5))
            with pytest.raises(RegistryTransientError) as info:
                await push_layout(c, tmp_path, repo, "v1")
            await killer
    finally:
        if registry_server.pid is None:
            await asyncio.to_thread(registry_server.start)
    assert isinstance(info.value, TransientError)
    assert registry_server.address in str(info.value) and repo in str(info.value)
    async with RegistryClient(registry_server.address, plain_http=True) as c:
        assert await c.manifest_digest(repo, "v1") is None  # nothing points at the missing blob
        await push_layout(c, tmp_path, repo, "v1")  # and a later push completes
        assert await c.manifest_digest(repo, "v1") is not None


# --- a registry that lies ----------------------------------------------------------------------


async def _liar(image_dir: Path, tamper: str) -> str:
    """Serve the image in ``image_dir`` as ``repo:v1``, lying in the way ``tamper`` says."""
    index = json.loads((image_dir / "index.json").read_text())
    mdigest = index["manifests"][0]["digest"]
    mbody = (image_dir / "blobs/sha256" / mdigest[7:]).read_bytes()

    async def manifest(request: web.Request) -> web.Response:
        body, said = mbody, mdigest
        if tamper == "manifest":
            body = mbody.replace(b'"schemaVersion": 2', b'"schemaVersion":  2')
            said = mdigest if request.match_info["ref"] == "v1" else request.match_info["ref"]
        return web.Response(
            body=body, headers={"Content-Type": index["manifests"][0]["mediaType"], "Docker-Content-Digest": said}
        )

    async def blob(request: web.Request) -> web.Response:
        data = bytearray((image_dir / "blobs/sha256" / request.match_info["digest"][7:]).read_bytes())
        if tamper == "blob" and len(data) > 1000:
            data[len(data) // 2] ^= 0xFF  # one flipped byte in the layer
        return web.Response(body=bytes(data))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="{}")

    served = await serve(
        {
            ("GET", "/v2/"): ok,
            ("GET", "/v2/repo/manifests/{ref}"): manifest,
            ("GET", "/v2/repo/blobs/{digest}"): blob,
        }
    )
    return served.address


@pytest.mark.parametrize("tamper", ["blob", "manifest"])
async def test_tampered_content_on_pull_is_refused(tmp_path: Path, tamper: str) -> None:
    make_image(tmp_path / "src", "v1", layer_sizes=(5000, 40000))
    address = await _liar(tmp_path / "src", tamper)
    async with RegistryClient(address, plain_http=True) as c:
        with pytest.raises(DigestMismatch, match="refused"):
            await pull_to_layout(c, "repo", "v1", tmp_path / "dst")
    kept = all_blob_files(tmp_path / "dst")
    src = all_blob_files(tmp_path / "src")
    assert all(src.get(name) == data for name, data in kept.items())  # nothing unverified was kept
    assert json.loads((tmp_path / "dst/index.json").read_text())["manifests"] == []


async def test_manifest_fetched_by_digest_must_hash_to_it(tmp_path: Path) -> None:
    make_image(tmp_path / "src", "v1")
    address = await _liar(tmp_path / "src", "manifest")
    wanted = "sha256:" + "ab" * 32
    async with RegistryClient(address, plain_http=True) as c:
        with pytest.raises(DigestMismatch, match=f"repository repo, manifest {wanted}"):
            await c.get_manifest("repo", wanted)


# --- transient and permanent answers -----------------------------------------------------------


def _scripted(statuses: list[tuple[int, dict[str, str]]]) -> web.Response | None:
    if statuses:
        status, headers = statuses.pop(0)
        return web.Response(status=status, headers=headers, text='{"errors":[{"code":"X","message":"scripted"}]}')
    return None


async def test_5xx_is_retried_then_succeeds(tmp_path: Path) -> None:
    script: list[tuple[int, dict[str, str]]] = [(503, {}), (502, {})]

    async def tags(request: web.Request) -> web.Response:
        return _scripted(script) or web.json_response({"name": "repo", "tags": ["a"]})

    served = await serve({("GET", "/v2/repo/tags/list"): tags})
    async with RegistryClient(served.address, plain_http=True, retry=RetryPolicy(initial_wait=0.01)) as c:
        assert await c.list_tags("repo") == ["a"]
        assert c.stats.retries == 2


async def test_429_honours_retry_after(tmp_path: Path) -> None:
    script = [(429, {"Retry-After": "1"})]

    async def tags(request: web.Request) -> web.Response:
        return _scripted(script) or web.json_response({"name": "repo", "tags": ["a"]})

    served = await serve({("GET", "/v2/repo/tags/list"): tags})
    async with RegistryClient(served.address, plain_http=True, retry=RetryPolicy(initial_wait=0.01)) as c:
        start = time.monotonic()
        assert await c.list_tags("repo") == ["a"]
        assert time.monotonic() - start >= 0.95


@pytest.mark.parametrize(
    ("status", "error"), [(500, RegistryServerError), (429, RegistryRateLimited)], ids=["500", "429"]
)
async def test_persistent_transient_answers_end_in_a_transient_error(status: int, error: type[Exception]) -> None:
    async def tags(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Retry-After": "0"})

    served = await serve({("GET", "/v2/repo/tags/list"): tags})
    async with RegistryClient(served.address, plain_http=True, retry=RetryPolicy(attempts=3, initial_wait=0.01)) as c:
        with pytest.raises(error) as info:
            await c.list_tags("repo")
    assert isinstance(info.value, TransientError)
    assert len(served.hits) == 3  # bounded: exactly the configured attempts


@pytest.mark.parametrize(("status", "error"), [(404, BlobMissing), (403, RegistryDenied)], ids=["404", "403"])
async def test_4xx_is_permanent_and_names_registry_repository_digest(status: int, error: type[Exception]) -> None:
    async def blob(request: web.Request) -> web.Response:
        return web.Response(status=status, text='{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}')

    served = await serve({("GET", "/v2/some/repo/blobs/{digest}"): blob})
    digest = "sha256:" + "cd" * 32
    async with RegistryClient(served.address, plain_http=True) as c:
        with pytest.raises(error) as info:
            await c.get_blob("some/repo", digest)
    assert not isinstance(info.value, TransientError)
    assert len(served.hits) == 1  # not retried
    assert f"registry {served.address}, repository some/repo, {digest}" in str(info.value)
