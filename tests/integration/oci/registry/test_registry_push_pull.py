"""Push and pull against a real docker-registry: identical bytes, no re-uploads, mounts, referrers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccpipe.oci.registry import (
    RegistryClient,
    list_referrers,
    pull_to_layout,
    push_layout,
    record_referrer,
    referrers_supported,
)
from ccpipe.oci.registry.errors import DigestMismatch, LayoutInvalid, ManifestNotFound
from ccpipe.pipeline.servers import EmbeddedRegistry
from tests.integration.oci.registry.registry_images import (
    add_cosign_sig,
    all_blob_files,
    make_image,
    make_raw_blob_image,
    referrer_manifest,
)

pytestmark = pytest.mark.integration


async def test_push_then_pull_yields_identical_bytes(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    digest = make_image(src, "v1")
    pushed = await push_layout(client, src, repo, "v1")
    assert pushed == digest
    assert await client.manifest_digest(repo, "v1") == digest
    pulled = await pull_to_layout(client, repo, "v1", dst)
    assert pulled == digest
    assert all_blob_files(dst) == all_blob_files(src)
    index = json.loads((dst / "index.json").read_text())
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] == [
        (digest, "v1")
    ]


async def test_second_push_uploads_no_blob(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    make_image(tmp_path, "v1", layer_sizes=(1000, 2000, 3000))
    await push_layout(client, tmp_path, repo, "v1")
    first = len(client.stats.uploaded_digests)
    assert first == 4  # three layers and the config
    await push_layout(client, tmp_path, repo, "v2", source_ref="v1")
    assert len(client.stats.uploaded_digests) == first
    assert client.stats.blobs_present == 4
    assert await client.manifest_digest(repo, "v2") == await client.manifest_digest(repo, "v1")


async def test_blob_in_another_repository_is_mounted_not_uploaded(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    make_image(tmp_path, "v1")
    await push_layout(client, tmp_path, repo, "v1")
    uploads = client.stats.blobs_uploaded
    await push_layout(client, tmp_path, repo + "-copy", "v1", mount_from=(repo,))
    assert client.stats.blobs_uploaded == uploads
    assert client.stats.blobs_mounted == 3


async def test_chunked_upload_of_a_large_blob(registry_server: EmbeddedRegistry, repo: str, tmp_path: Path) -> None:
    digest = make_raw_blob_image(tmp_path / "src", "big", 3 * 1024 * 1024 + 17)
    async with RegistryClient(registry_server.address, plain_http=True, chunk_size=256 * 1024) as c:
        assert await push_layout(c, tmp_path / "src", repo, "big") == digest
        assert c.stats.chunks_uploaded >= 13  # the layer went in 256 KiB pieces
        await pull_to_layout(c, repo, "big", tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path / "src")


async def test_index_push_pushes_children_first(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    from tests.integration.oci.registry.registry_images import OCI_INDEX, OCI_MANIFEST, put_blob

    a = make_image(tmp_path, "a")
    b = make_image(tmp_path, "b")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": (tmp_path / "blobs/sha256" / d[7:]).stat().st_size}
            for d in (a, b)
        ],
    }
    desc = put_blob(tmp_path, json.dumps(index).encode())
    idx = json.loads((tmp_path / "index.json").read_text())
    idx["manifests"].append(
        {"mediaType": OCI_INDEX, **desc, "annotations": {"org.opencontainers.image.ref.name": "multi"}}
    )
    (tmp_path / "index.json").write_text(json.dumps(idx))
    assert await push_layout(client, tmp_path, repo, "multi") == desc["digest"]
    assert (await client.get_manifest(repo, a)).digest == a
    await pull_to_layout(client, repo, "multi", tmp_path / "dst")
    assert all_blob_files(tmp_path / "dst") == all_blob_files(tmp_path)


async def test_cosign_sig_tag_travels_with_the_image(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    digest = make_image(tmp_path / "src", "v1")
    sig = add_cosign_sig(tmp_path / "src", digest)
    await push_layout(client, tmp_path / "src", repo, "v1")
    tag = "sha256-" + digest[7:] + ".sig"
    assert await client.manifest_digest(repo, tag) == sig
    await pull_to_layout(client, repo, "v1", tmp_path / "dst")
    names = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in json.loads((tmp_path / "dst/index.json").read_text())["manifests"]
    }
    assert names == {"v1": digest, tag: sig}


async def test_referrers_fallback_tag_on_a_registry_without_the_api(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    digest = make_image(tmp_path, "v1")
    subject = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": (tmp_path / "blobs/sha256" / digest[7:]).stat().st_size,
    }
    bundle = referrer_manifest(tmp_path, subject, "application/vnd.dev.sigstore.bundle.v0.3+json", b'{"b":1}')
    sbom = referrer_manifest(tmp_path, subject, "application/spdx+json", b'{"spdx":1}')
    for r in (bundle, sbom):  # referrers live in the layout untagged
        idx = json.loads((tmp_path / "index.json").read_text())
        idx["manifests"].append({k: r[k] for k in ("mediaType", "digest", "size")})
        (tmp_path / "index.json").write_text(json.dumps(idx))
    await push_layout(client, tmp_path, repo, "v1")
    assert not await referrers_supported(client, repo, digest)  # distribution 2.8 has no API
    found = await list_referrers(client, repo, digest)
    assert sorted(m["digest"] for m in found) == sorted([bundle["digest"], sbom["digest"]])
    only = await list_referrers(client, repo, digest, artifact_type="application/spdx+json")
    assert [m["digest"] for m in only] == [sbom["digest"]]
    # recording the same referrer again does not duplicate it
    assert not await record_referrer(client, repo, bundle["body"], bundle["digest"])
    assert len(await list_referrers(client, repo, digest)) == 2
    assert await client.manifest_digest(repo, "sha256-" + digest[7:]) is not None
    assert await list_referrers(client, repo, "sha256:" + "0" * 64) == []


async def test_manifest_is_not_pushed_when_a_blob_is_missing_from_the_layout(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    digest = make_image(tmp_path, "v1")
    manifest = json.loads((tmp_path / "blobs/sha256" / digest[7:]).read_text())
    (tmp_path / "blobs/sha256" / manifest["layers"][1]["digest"][7:]).unlink()
    with pytest.raises(LayoutInvalid, match="missing"):
        await push_layout(client, tmp_path, repo, "v1")
    assert await client.manifest_digest(repo, "v1") is None


async def test_corrupt_layout_blob_is_refused_before_the_manifest(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    digest = make_raw_blob_image(tmp_path, "v1", 600_000)
    manifest = json.loads((tmp_path / "blobs/sha256" / digest[7:]).read_text())
    layer = tmp_path / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[12345] ^= 1
    layer.write_bytes(bytes(data))
    client.chunk_size = 100_000  # chunked path: the mismatch is found after streaming
    with pytest.raises(DigestMismatch, match="does not hash"):
        await push_layout(client, tmp_path, repo, "v1")
    assert await client.blob_size(repo, manifest["layers"][0]["digest"]) is None
    assert await client.manifest_digest(repo, "v1") is None


async def test_pull_of_an_unknown_tag_names_registry_and_repository(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    with pytest.raises(ManifestNotFound, match=rf"registry 127\.0\.0\.1:\d+, repository {repo}, manifest nope"):
        await pull_to_layout(client, repo, "nope", tmp_path)
