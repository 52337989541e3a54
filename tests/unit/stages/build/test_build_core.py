"""build_from_repo end to end: a git commit in, a reproducible image that real tools read out."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.core import BuildResult, build_from_repo
from ccpipe.stages.build.errors import CheckoutFailed, RecipeInvalid
from tests.unit.stages.build.build_helpers import COMMIT_EPOCH, MakeRepo, git, hello_files


def _build(repo: Path, out: Path, busybox_layout: Path, **kw: object) -> BuildResult:
    bases = BaseSources(oci_roots=(busybox_layout.parent,))
    return build_from_repo(repo, "main", out, bases=bases, workload_id="wl-test", **kw)  # type: ignore[arg-type]


@pytest.fixture
def hello_repo(make_repo: MakeRepo, busybox_layout: Path) -> Path:
    return make_repo(hello_files(f"oci:{busybox_layout}:busybox"), executable=("app/hello.sh",))


@pytest.fixture
def built(hello_repo: Path, busybox_layout: Path, tmp_path: Path) -> BuildResult:
    return _build(hello_repo, tmp_path / "out", busybox_layout)


def test_same_commit_twice_same_digest(hello_repo: Path, busybox_layout: Path, tmp_path: Path) -> None:
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    a = _build(hello_repo, tmp_path / "one", busybox_layout, work_root=tmp_path / "w1")
    old = os.umask(0o077)
    try:
        b = _build(hello_repo, tmp_path / "deeper/two", busybox_layout, work_root=tmp_path / "w2")
    finally:
        os.umask(old)
    assert a.image_digest == b.image_digest
    blobs = sorted(p.name for p in (tmp_path / "one/blobs/sha256").iterdir())
    assert blobs == sorted(p.name for p in (tmp_path / "deeper/two/blobs/sha256").iterdir())
    assert (tmp_path / "one/index.json").read_bytes() == (tmp_path / "deeper/two/index.json").read_bytes()
    assert not list((tmp_path / "w1").iterdir()) and not list((tmp_path / "w2").iterdir()), "checkout left behind"


def test_a_different_commit_time_changes_the_digest(
    make_repo: MakeRepo, busybox_layout: Path, hello_repo: Path, tmp_path: Path
) -> None:
    later = make_repo(hello_files(f"oci:{busybox_layout}:busybox"), executable=("app/hello.sh",),
                      date="2024-01-02T00:00:00Z")  # fmt: skip
    a = _build(hello_repo, tmp_path / "a", busybox_layout)
    b = _build(later, tmp_path / "b", busybox_layout)
    assert a.image_digest != b.image_digest
    assert a.image.diff_ids[0] == b.image.diff_ids[0]  # same base layer


def test_result_fields(built: BuildResult, hello_repo: Path) -> None:
    assert built.commit == git(hello_repo, "rev-parse", "HEAD")
    assert built.source_date_epoch == COMMIT_EPOCH
    assert built.image.tag == "hello" == built.spec.workload.name
    assert built.image_digest == built.image.manifest.digest
    assert OciLayout.open(built.layout).resolve("hello").digest == built.image_digest
    assert len(built.provenance_digest) == 48 and len(built.report_data) == 64
    assert built.provenance_digest_str == "sha384:" + built.provenance_digest.hex()


def test_uncompressed_layers_match_diff_ids(built: BuildResult) -> None:
    layout = OciLayout.open(built.layout)
    manifest = layout.read_manifest(built.image.manifest)
    config = layout.read_json(manifest.config)
    assert len(manifest.layers) == len(config["rootfs"]["diff_ids"]) == 2
    for layer, diff_id in zip(manifest.layers, config["rootfs"]["diff_ids"], strict=True):
        blob = layout.blob_path(layer.digest).read_bytes()
        assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
        assert layer.size == len(blob) and layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
        assert blob[:10] == bytes.fromhex("1f8b08000000000004ff")


def test_skopeo_reads_the_image(built: BuildResult) -> None:
    ref = f"oci:{built.layout}:hello"
    info = json.loads(subprocess.check_output(["skopeo", "inspect", ref]))
    assert info["Digest"] == built.image_digest
    assert info["Created"] == "2024-01-01T00:00:00Z"
    assert info["Labels"] == {"org.example.team": "ccpipe"}
    assert "GREETING=hi" in info["Env"]
    config = json.loads(subprocess.check_output(["skopeo", "inspect", "--config", ref]))
    assert config["config"]["Entrypoint"] == ["/app/hello.sh"]
    assert config["config"]["WorkingDir"] == "/app"
    assert config["rootfs"]["diff_ids"] == list(built.image.diff_ids)


def _rootless_owner(path: Path) -> tuple[int, int]:
    """Owner umoci --rootless recorded in user.rootlesscontainers (absent = 0:0)."""
    try:
        raw = os.getxattr(path, "user.rootlesscontainers", follow_symlinks=False)
    except OSError:
        return (0, 0)
    values, i = {}, 0
    while i < len(raw):  # protobuf: field 1 uid, field 2 gid, both varints
        key, i = raw[i], i + 1
        value, shift = 0, 0
        while True:
            b, i = raw[i], i + 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        values[key >> 3] = value
    return values.get(1, 0), values.get(2, 0)


def test_umoci_unpacks_expected_files_modes_owners(built: BuildResult, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{built.layout}:hello", str(bundle)], check=True,
        capture_output=True,
    )  # fmt: skip
    root = bundle / "rootfs"
    expect = {
        "app": (stat.S_IFDIR | 0o755, (0, 0)),
        "app/hello.sh": (stat.S_IFREG | 0o755, (0, 0)),
        "app/data.txt": (stat.S_IFREG | 0o644, (0, 0)),
        "app/sub/deep.txt": (stat.S_IFREG | 0o644, (0, 0)),
        "app/evil": (stat.S_IFLNK | 0o777, (0, 0)),
        "srv": (stat.S_IFDIR | 0o755, (0, 0)),
        "srv/data.txt": (stat.S_IFREG | 0o600, (1000, 1000)),
        "tmp": (stat.S_IFDIR | 0o1777, (0, 0)),
        "bin/sh": (stat.S_IFLNK | 0o777, (0, 0)),
    }
    for rel, (mode, owner) in expect.items():
        st = (root / rel).lstat()
        assert (oct(st.st_mode), _rootless_owner(root / rel)) == (oct(mode), owner), rel
        if not stat.S_ISDIR(st.st_mode):
            assert st.st_mtime == (0 if rel == "bin/sh" else COMMIT_EPOCH), rel
    assert os.readlink(root / "app/evil") == "/etc/passwd"
    assert (root / "app/hello.sh").read_bytes() == b'#!/bin/sh\necho "$GREETING"\n'
    assert not (root / "README").exists() and not (root / "ccpipe.toml").exists()
    run = subprocess.run([root / "bin/busybox", "sh", root / "app/hello.sh"], env={"GREETING": "hi"},
                         capture_output=True, check=True)  # fmt: skip
    assert run.stdout == b"hi\n"


def test_base_layout_inside_the_repository(make_repo: MakeRepo, busybox_layout: Path, tmp_path: Path) -> None:
    files = hello_files("oci:third_party/base:busybox")
    for p in busybox_layout.rglob("*"):
        if p.is_file():
            files[f"third_party/base/{p.relative_to(busybox_layout)}"] = p.read_bytes()
    repo = make_repo(files, executable=("app/hello.sh",))
    result = build_from_repo(repo, "main", tmp_path / "out")  # no oci_roots needed
    assert result.image.base.manifest_digest == OciLayout.open(busybox_layout).resolve("busybox").digest


def test_missing_or_linked_spec(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo({"f": b"x"})
    with pytest.raises(RecipeInvalid) as err:
        build_from_repo(repo, "main", tmp_path / "o1")
    assert err.value.code == "build.recipe.missing"
    linked = make_repo({"ccpipe.toml": ("link", "/etc/passwd")})
    with pytest.raises(RecipeInvalid, match="symlink"):
        build_from_repo(linked, "main", tmp_path / "o2")


def test_bad_ref_names_it_and_leaves_nothing(hello_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    with pytest.raises(CheckoutFailed, match="refs/heads/nope") as err:
        build_from_repo(hello_repo, "refs/heads/nope", tmp_path / "out", work_root=tmp_path / "w")
    assert err.value.code == "build.checkout"
    assert not list((tmp_path / "w").iterdir())
    shutil.rmtree(tmp_path / "w")
