"""Fuzz: tar layers, as the runner unpacks them and as the builder indexes a base's layers.

A layer comes from a registry (the runner) or from a base image the user names (the builder):
whatever its bytes, the runner raises :class:`UnpackError` and the builder :class:`BaseImageError`,
and nothing is written outside the root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.enclave_runner.errors import UnpackError
from ccpipe.enclave_runner.unpack import UnpackLimits, apply_layer_stream
from ccpipe.oci.documents import MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP, Descriptor
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base.fs_index import BaseFilesystem, index_layer
from ccpipe.stages.build.base.importer import import_base
from ccpipe.stages.build.errors import BaseImageError, BuildError
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

SMALL = UnpackLimits(max_entries=200, max_total_bytes=1 << 20, max_file_bytes=1 << 18)


def _seed_layer() -> bytes:
    """A valid PAX layer with every entry kind the unpacker applies, a long name and a whiteout."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname, info.mtime, info.mode = kind, len(data), link, 1_700_000_000, 0o755
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("etc", tarfile.DIRTYPE)
        add("etc/hosts", data=b"127.0.0.1 localhost\n")
        add("bin", tarfile.SYMTYPE, link="usr/bin")
        add("usr/bin/sh", data=b"#!/bin/true\n")
        add("etc/hosts2", tarfile.LNKTYPE, link="etc/hosts")
        add("opt/" + "n" * 150 + "/file", data=b"long name: a PAX path record")
        add("etc/.wh.old")
        # A GNU sparse 1.0 file (PAX records, then the map "1 region at 0 of 3 bytes" in the data),
        # so mutations reach tarfile's sparse parsing.
        sparse = tarfile.TarInfo("var/sparse")
        sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "3"}
        data = b"1\n0\n3\n".ljust(512, b"\0") + b"abc"
        sparse.size = len(data)
        tar.addfile(sparse, io.BytesIO(data))
    return buf.getvalue()


SEED = _seed_layer()
SEED_GZ = gzip.compress(SEED, mtime=0)
LAYER_INPUTS = st.one_of(
    byte_mutations(SEED).map(lambda b: (b, MEDIA_TYPE_LAYER)),
    byte_mutations(SEED_GZ).map(lambda b: (b, MEDIA_TYPE_LAYER_GZIP)),
    byte_mutations(SEED).map(lambda b: (gzip.compress(b, mtime=0), MEDIA_TYPE_LAYER_GZIP)),
)


def _unpack(layer: tuple[bytes, str]) -> None:
    data, media_type = layer
    with tempfile.TemporaryDirectory() as top:
        root = Path(top) / "root"
        root.mkdir()
        try:
            apply_layer_stream(io.BytesIO(data), root, media_type=media_type, limits=SMALL)
        finally:
            # Nothing may land beside the root, whatever the layer holds.
            assert sorted(p.name for p in Path(top).iterdir()) == ["root"]


@fuzz_settings(deadline_ms=5000)
@given(LAYER_INPUTS)
def test_fuzz_runner_unpacks_a_layer_or_raises_unpack_error(layer: tuple[bytes, str]) -> None:
    parses_or_refuses(_unpack, layer, UnpackError)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OciLayout:
    return OciLayout.open_or_create(tmp_path_factory.mktemp("fuzz-layout"))


@fuzz_settings(deadline_ms=5000)
@given(layer=LAYER_INPUTS)
def test_fuzz_builder_indexes_a_base_layer_or_raises_base_image_error(
    layout: OciLayout, layer: tuple[bytes, str]
) -> None:
    data, media_type = layer
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    desc = layout.add_blob([data], Descriptor(media_type=media_type, digest=digest, size=len(data)))
    parses_or_refuses(lambda d: index_layer(layout, d, BaseFilesystem()), desc, BaseImageError)


def _docker_archive() -> bytes:
    """A ``docker save`` style archive of one image whose one layer is :data:`SEED`."""
    diff_id = "sha256:" + hashlib.sha256(SEED).hexdigest()
    files = {
        "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["base:1"], "Layers": ["l.tar"]}]).encode(),
        "c.json": json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                                               "diff_ids": [diff_id]}}).encode(),
        "l.tar": SEED,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _import(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as top:
        archive = Path(top) / "base.tar"
        archive.write_bytes(data)
        import_base(archive, Path(top) / "layout", tag="base")


@fuzz_settings(deadline_ms=5000)
@given(byte_mutations(_docker_archive()))
def test_fuzz_builder_imports_a_base_archive_or_raises_build_error(data: bytes) -> None:
    # The layout's own errors (a blob that does not match) are OciLayoutError, also a CcpipeError.
    parses_or_refuses(_import, data, (BuildError, OciLayoutError))
