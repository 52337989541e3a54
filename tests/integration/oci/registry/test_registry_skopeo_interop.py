"""Interop with skopeo: what ccpipe pushes skopeo reads, and what skopeo pushes ccpipe pulls."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ccpipe.oci.registry import RegistryClient, pull_to_layout, push_layout
from ccpipe.pipeline.servers import EmbeddedRegistry
from tests.integration.oci.registry.registry_images import all_blob_files, make_image

# skopeo is installed by scripts/install-system-deps.sh (./run test); a missing one fails loudly.
pytestmark = pytest.mark.integration


def skopeo(*args: str) -> str:
    out = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_image_pushed_by_ccpipe_is_read_by_skopeo(
    client: RegistryClient, registry_server: EmbeddedRegistry, repo: str, tmp_path: Path
) -> None:
    digest = make_image(tmp_path / "src", "v1")
    await push_layout(client, tmp_path / "src", repo, "v1")
    ref = f"docker://{registry_server.address}/{repo}:v1"
    info = json.loads(skopeo("inspect", "--tls-verify=false", ref))
    assert info["Digest"] == digest
    skopeo("copy", "--src-tls-verify=false", ref, f"oci:{tmp_path / 'copy'}:v1")
    assert all_blob_files(tmp_path / "copy") == all_blob_files(tmp_path / "src")


async def test_image_pushed_by_skopeo_is_pulled_by_ccpipe(
    client: RegistryClient, registry_server: EmbeddedRegistry, repo: str, tmp_path: Path
) -> None:
    digest = make_image(tmp_path / "src", "v1")
    ref = f"docker://{registry_server.address}/{repo}:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", ref)
    pulled = await pull_to_layout(client, repo, "v1", tmp_path / "dst")
    assert pulled == digest  # skopeo kept the manifest bytes
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")
