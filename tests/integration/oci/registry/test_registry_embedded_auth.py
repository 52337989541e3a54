"""The embedded registry as ``ccpipe up`` starts it: no anonymous push, no delete, the pipeline's push works."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.oci.registry import Credentials, RegistryClient, pull_to_layout, push_layout
from ccpipe.oci.registry.errors import RegistryAuthError
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.pipeline.services import registry_credentials, write_registry_credentials
from ccpipe.pipeline.settings import load_settings
from tests.integration.oci.registry.registry_images import all_blob_files, make_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the embedded registry's credentials."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def guarded(data_dir: Path) -> Iterator[EmbeddedRegistry]:
    """The registry configured as ``embedded_services`` configures it."""
    reg = EmbeddedRegistry(data_dir / "registry", htpasswd=write_registry_credentials(data_dir)).start()
    yield reg
    reg.stop()


def _creds(data_dir: Path, role: str) -> Credentials:
    creds = registry_credentials(load_settings(registry=None, data_dir=data_dir), role)
    assert creds is not None
    return creds


def _status(method: str, url: str, creds: Credentials | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method in ("POST", "PUT") else None)
    if creds is not None:
        request.add_header("Authorization", creds.basic_header())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_the_pipeline_pushes_and_pulls_with_its_credentials(
    guarded: EmbeddedRegistry, data_dir: Path, tmp_path: Path
) -> None:
    digest = make_image(tmp_path / "src", "v1")
    async with RegistryClient(guarded.address, plain_http=True, credentials=_creds(data_dir, "push")) as pusher:
        assert await push_layout(pusher, tmp_path / "src", "ccpipe/app", "v1") == digest
    async with RegistryClient(guarded.address, plain_http=True, credentials=_creds(data_dir, "pull")) as puller:
        await pull_to_layout(puller, "ccpipe/app", digest, tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")


async def test_an_anonymous_or_wrong_push_is_refused(guarded: EmbeddedRegistry, tmp_path: Path) -> None:
    start_upload = f"http://{guarded.address}/v2/ccpipe/app/blobs/uploads/"
    assert _status("POST", start_upload) == 401
    assert _status("POST", start_upload, Credentials("ccpipe-push", "guessed")) == 401
    make_image(tmp_path, "v1")
    async with RegistryClient(guarded.address, plain_http=True) as anonymous:
        with pytest.raises(RegistryAuthError, match="none were configured"):
            await push_layout(anonymous, tmp_path, "ccpipe/app", "evil", source_ref="v1")


async def test_no_credential_deletes_a_manifest_or_blob(
    guarded: EmbeddedRegistry, data_dir: Path, tmp_path: Path
) -> None:
    digest = make_image(tmp_path / "src", "v1")
    push = _creds(data_dir, "push")
    async with RegistryClient(guarded.address, plain_http=True, credentials=push) as pusher:
        await push_layout(pusher, tmp_path / "src", "ccpipe/kept", "v1")
        manifest = await pusher.get_manifest("ccpipe/kept", digest)
    base = f"http://{guarded.address}/v2/ccpipe/kept"
    assert _status("DELETE", f"{base}/manifests/{digest}") == 401
    assert _status("DELETE", f"{base}/manifests/{digest}", push) == 405  # deletes are off in the registry
    layer = json.loads(manifest.body)["layers"][0]["digest"]
    assert _status("DELETE", f"{base}/blobs/{layer}", push) == 405
    async with RegistryClient(guarded.address, plain_http=True, credentials=push) as pusher:
        assert await pusher.manifest_digest("ccpipe/kept", "v1") == digest
