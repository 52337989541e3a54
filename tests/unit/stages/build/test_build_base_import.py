"""Importing bases: oci-archive and docker-archive tarballs, layouts (digest kept), junk refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base.importer import import_base
from ccpipe.stages.build.base.resolve import BaseSources, resolve_base
from ccpipe.stages.build.errors import BaseImageError
from tests.malformed_layers import after_a_good_entry, bad_sparse_header_layer


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_import_archives(tmp_path: Path, busybox_layout: Path, transport: str) -> None:
    archive = tmp_path / f"bb-{transport}.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{busybox_layout}:busybox", f"{transport}:{archive}"], check=True,
        capture_output=True,
    )  # fmt: skip
    desc = import_base(archive, tmp_path / "imported", tag="bb")
    layout = OciLayout.open(tmp_path / "imported")
    original = OciLayout.open(busybox_layout)
    diff_ids = layout.read_json(layout.read_manifest(desc).config)["rootfs"]["diff_ids"]
    assert (
        diff_ids == original.read_json(original.read_manifest(original.resolve("busybox")).config)["rootfs"]["diff_ids"]
    )
    inspected = json.loads(subprocess.check_output(["skopeo", "inspect", f"oci:{tmp_path / 'imported'}:bb"]))
    assert inspected["Digest"] == desc.digest
    base = resolve_base(
        f"oci:{tmp_path / 'imported'}:bb", OciLayout.create(tmp_path / "out"), context=None,
        sources=BaseSources(oci_roots=(tmp_path,)),
    )  # fmt: skip
    assert base.fs.lookup(["bin", "sh"]) == "symlink"
    assert base.fs.lookup(["bin", "sh"], follow_last=True) == "file"


def test_import_layout_keeps_the_digest(tmp_path: Path, busybox_layout: Path) -> None:
    desc = import_base(busybox_layout, tmp_path / "copy", tag="x", source_tag="busybox")
    assert desc.digest == OciLayout.open(busybox_layout).resolve("busybox").digest


def test_import_refuses_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BaseImageError):
        import_base(junk, tmp_path / "l", tag="x")


@pytest.mark.parametrize("first", [True, False], ids=["first-entry", "later-entry"])
def test_import_refuses_a_malformed_sparse_header(tmp_path: Path, first: bool) -> None:
    # Found while fuzzing the tar readers: tarfile's raw ValueError escaped import_base.
    archive = tmp_path / "base.tar"
    data = bad_sparse_header_layer()
    if not first:  # met while listing the members, not when opening
        data = after_a_good_entry(data)
    archive.write_bytes(data)
    with pytest.raises(BaseImageError, match="tar archive: not enough values"):
        import_base(archive, tmp_path / "l", tag="x")
