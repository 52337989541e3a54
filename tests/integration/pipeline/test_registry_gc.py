"""Removing images from a real docker-registry: admin deletes, then its garbage collector."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from ccpipe.pipeline.registry_gc import ImageRef, pushing, remove_images, storage_bytes
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.schemas.digest import digest_tag
from ccpipe.schemas.errors import TransientError
from tests.integration.pipeline.registry_push_raw import (
    blob_status,
    delete_manifest,
    manifest_status,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.integration
REPO = "ccpipe/hello"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_registry_gc_removes_images_and_attachments_and_keeps_the_rest(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "registry").start()
    try:
        addr = reg.address
        base = os.urandom(300_000)  # a layer both images share: it must survive
        gone_layer, kept_layer = os.urandom(2_000_000), os.urandom(2_000_000)
        gone = push_image(addr, REPO, "wl-ended", [base, gone_layer])
        sig = push_image(addr, REPO, digest_tag(gone) + ".sig", [os.urandom(500_000)])
        kept = push_image(addr, REPO, "wl-live", [base, kept_layer])
        kept_sig = push_image(addr, REPO, digest_tag(kept) + ".sig", [os.urandom(500_000)])
        before = storage_bytes(reg.storage)
        assert delete_manifest(addr, REPO, gone) == 405  # the served registry refuses deletes to clients
        result = remove_images(reg, [ImageRef(REPO, gone)])
        assert set(result.deleted) == {gone, sig}
        after = storage_bytes(reg.storage)
        assert before - after >= 2_400_000 and result.freed_bytes == before - after, (before, after)
        # it serves again, on the same port, without what was removed
        assert reg.address == addr and reg.pid is not None
        assert manifest_status(addr, REPO, "wl-ended") == 404 and manifest_status(addr, REPO, gone) == 404
        assert manifest_status(addr, REPO, digest_tag(gone) + ".sig") == 404
        assert manifest_status(addr, REPO, "wl-live") == 200 and manifest_status(addr, REPO, kept_sig) == 200
        assert blob_status(addr, REPO, sha(base)) == 200 and blob_status(addr, REPO, sha(kept_layer)) == 200
        assert blob_status(addr, REPO, sha(gone_layer)) == 404
        # pushes work again after the restart, and a second removal of the same image is a no-op
        push_blob(addr, REPO, b"after")
        again = remove_images(reg, [ImageRef(REPO, gone)])
        assert again.deleted == []
        assert not (reg.root / "admin.htpasswd").exists() and not (reg.root / "admin-config.yml").exists()
        # the collector's output is the latest run's only: the logs do not grow with every removal
        assert "blob" in (reg.root / "gc.log").read_text() and "eligible" not in (reg.root / "registry.log").read_text()
    finally:
        reg.stop()
    with pytest.raises(TransientError, match="not running"):
        remove_images(reg, [ImageRef(REPO, kept)])


async def test_registry_gc_waits_for_a_push_in_progress(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "registry").start()
    try:
        gone = push_image(reg.address, REPO, "wl-ended", [os.urandom(100_000)])
        pid = reg.pid
        async with pushing(reg.root):  # a push between its blobs and its manifest
            removal = asyncio.create_task(asyncio.to_thread(remove_images, reg, [ImageRef(REPO, gone)]))
            await asyncio.sleep(1.0)
            # the manifests may go, but the registry is neither stopped nor collected meanwhile
            assert not removal.done() and reg.pid == pid
            push_blob(reg.address, REPO, b"uploads go on while the removal waits")
        result = await asyncio.wait_for(removal, 60)
        assert result.deleted == [gone] and reg.pid != pid
        # a new push waits while a collection holds the lock, then goes on
        async with pushing(reg.root):
            pass
    finally:
        reg.stop()


def test_a_refused_delete_leaves_that_image_for_the_next_round_and_removes_the_others(tmp_path: Path) -> None:
    # a repository whose tag a push from another host was writing when the registry stopped: its tag
    # link is empty, and distribution refuses every delete there (500, "invalid checksum digest format")
    reg = EmbeddedRegistry(tmp_path / "registry").start()
    try:
        addr = reg.address
        stuck = push_image(addr, "ccpipe/stuck", "wl-a", [os.urandom(200_000)])
        push_image(addr, "ccpipe/stuck", "wl-half-written", [os.urandom(1_000)])
        gone_layer = os.urandom(1_500_000)
        gone = push_image(addr, REPO, "wl-b", [gone_layer])
        link = reg.storage / "docker/registry/v2/repositories/ccpipe/stuck/_manifests/tags/wl-half-written/current/link"
        assert link.is_file()
        link.write_bytes(b"")
        result = remove_images(reg, [ImageRef("ccpipe/stuck", stuck), ImageRef(REPO, gone)])
        assert list(result.failed) == [ImageRef("ccpipe/stuck", stuck)]
        assert "500" in result.failed[ImageRef("ccpipe/stuck", stuck)]
        assert result.deleted == [gone]  # the other image went, blobs and all
        assert manifest_status(addr, REPO, gone) == 404 and blob_status(addr, REPO, sha(gone_layer)) == 404
        assert reg.pid is not None  # serving again
        # distribution had unlinked the manifest before failing on the tag: the next round finds it
        # gone and ends that image's removal instead of failing on it forever
        again = remove_images(reg, [ImageRef("ccpipe/stuck", stuck)])
        assert again.failed == {} and manifest_status(addr, "ccpipe/stuck", stuck) == 404
    finally:
        reg.stop()
