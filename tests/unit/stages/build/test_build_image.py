"""From recipe to image: copy semantics, config merging, and trees the builder must refuse."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.workload import BuildRecipe, CopySpec
from ccpipe.stages.build.base.busybox import make_busybox_base
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.core import ImageBuild, build_image
from ccpipe.stages.build.errors import PathEscape, RecipeInvalid, SpecialFileRefused, SymlinkEscape, UnsupportedName
from ccpipe.stages.build.layer import EntryType, LayerEntry, write_layer
from tests.unit.stages.build.build_helpers import layer_members

SDE = 1_700_000_000


def recipe(**fields: Any) -> BuildRecipe:
    return BuildRecipe.model_validate(fields)


def build(ctx: Path, out: Path, bases_root: Path | None = None, **fields: Any) -> ImageBuild:
    sources = BaseSources(oci_roots=(bases_root,)) if bases_root else None
    return build_image(ctx, recipe(**fields), out, source_date_epoch=SDE, tag="t", bases=sources)


def members(image: ImageBuild) -> dict[str, Any]:
    layout = OciLayout.open(image.layout)
    return layer_members(layout.blob_path(image.new_layers[0].descriptor.digest))


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "app/sub").mkdir(parents=True)
    (c / "app/run.sh").write_bytes(b"#!/bin/sh\n")
    (c / "app/run.sh").chmod(0o775)
    (c / "app/sub/x.txt").write_bytes(b"x")
    (c / "app/sub/x.txt").chmod(0o600)
    (c / "top.txt").write_bytes(b"top")
    os.symlink("/etc/passwd", c / "app/passwd")
    return c


# -- copy semantics --------------------------------------------------------------------------


def test_contents_copy_with_normalised_modes(ctx: Path, tmp_path: Path) -> None:
    img = build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/opt/app/"}])
    m = members(img)
    assert sorted(m) == ["opt", "opt/app", "opt/app/passwd", "opt/app/run.sh", "opt/app/sub", "opt/app/sub/x.txt"]
    assert m["opt/app/run.sh"].mode == 0o755  # executable for someone -> 0755
    assert m["opt/app/sub/x.txt"].mode == 0o644  # else 0644, whatever the umask or chmod
    assert m["opt/app/sub"].mode == 0o755
    assert m["opt/app/passwd"].issym() and m["opt/app/passwd"].linkname == "/etc/passwd"
    assert all(x.uid == 0 and x.gid == 0 and x.mtime == SDE for x in m.values())


def test_mode_and_owner(ctx: Path, tmp_path: Path) -> None:
    img = build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/app/", "mode": "0640", "owner": "10:20"}])
    m = members(img)
    assert m["app/run.sh"].mode == 0o640
    assert m["app/sub"].mode == 0o750  # dirs get x wherever the mode has r
    assert m["app/passwd"].mode == 0o777
    assert {(x.uid, x.gid) for x in m.values()} == {(10, 20)}


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        ("top.txt", "/etc/", ["etc", "etc/top.txt"]),
        ("top.txt", "/etc/renamed", ["etc", "etc/renamed"]),
        ("app/sub", "/x/", ["x", "x/sub", "x/sub/x.txt"]),
        ("app/sub", "/y", ["y", "y/x.txt"]),
        ("app/sub/", "/z/", ["z", "z/x.txt"]),
        ("app/passwd", "/l", ["l"]),
    ],
)
def test_copy_targets(ctx: Path, tmp_path: Path, src: str, dst: str, expected: list[str]) -> None:
    assert sorted(members(build(ctx, tmp_path / "out", copy=[{"src": src, "dst": dst}]))) == expected


def test_no_copies_means_no_new_layer(ctx: Path, tmp_path: Path) -> None:
    img = build(ctx, tmp_path / "out", cmd=["true"])
    assert img.new_layers == () and img.layers == ()
    config = OciLayout.open(img.layout).read_json(OciLayout.open(img.layout).read_manifest(img.manifest).config)
    assert config["history"][-1]["empty_layer"] is True
    assert config["rootfs"] == {"type": "layers", "diff_ids": []}


def test_missing_source(ctx: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeInvalid, match=r"build.copy\[0\].src: 'nope' does not exist"):
        build(ctx, tmp_path / "out", copy=[{"src": "nope", "dst": "/x"}])


def test_conflicting_copies(ctx: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeInvalid, match=r"build.copy\[0\] and build.copy\[1\] both write /x"):
        build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/x/"}, {"src": "top.txt", "dst": "/x"}])


def test_later_copy_wins_for_files(ctx: Path, tmp_path: Path) -> None:
    img = build(ctx, tmp_path / "out", copy=[{"src": "app/run.sh", "dst": "/f"}, {"src": "top.txt", "dst": "/f"}])
    assert members(img)["f"].size == 3


# -- the base is respected -------------------------------------------------------------------


@pytest.fixture
def merged_usr_base(tmp_path: Path) -> Path:
    """A base with /usr/bin, /bin -> usr/bin and /tmp 1777, in layout bases/merged:latest."""
    layout = OciLayout.create(tmp_path / "bases" / "merged")
    entries = [
        LayerEntry("usr", EntryType.DIR, 0o755),
        LayerEntry("usr/bin", EntryType.DIR, 0o755),
        LayerEntry("bin", EntryType.SYMLINK, 0o777, linkname="usr/bin"),
        LayerEntry("tmp", EntryType.DIR, 0o1777),
        LayerEntry("srv", EntryType.DIR, 0o700, uid=5, gid=5),
    ]
    layer = write_layer(layout, entries, source_date_epoch=0)
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    layout.write_image(config, [layer.descriptor], tag="latest")
    return tmp_path / "bases"


def test_base_directories_and_symlinks_are_not_replaced(ctx: Path, tmp_path: Path, merged_usr_base: Path) -> None:
    img = build(
        ctx, tmp_path / "out", merged_usr_base,
        base=f"oci:{merged_usr_base}/merged:latest",
        copy=[
            {"src": "top.txt", "dst": "/tmp/t"},
            {"src": "app/run.sh", "dst": "/bin/"},
            {"src": "top.txt", "dst": "/srv/a/b"},
            {"src": "app/sub/", "dst": "/bin/sub/"},
        ],
    )  # fmt: skip
    m = members(img)
    # /tmp, /bin (a symlink) and /srv exist in the base: not in the layer, so their metadata stays.
    assert sorted(m) == ["bin/run.sh", "bin/sub", "bin/sub/x.txt", "srv/a", "srv/a/b", "tmp/t"]
    assert m["srv/a"].mode == 0o755 and m["srv/a"].uid == 0


def test_copy_onto_a_base_symlink_to_a_directory_keeps_the_link(
    ctx: Path, tmp_path: Path, merged_usr_base: Path
) -> None:
    img = build(
        ctx, tmp_path / "out", merged_usr_base,
        base=f"oci:{merged_usr_base}/merged:latest", copy=[{"src": "app/sub/", "dst": "/bin/"}],
    )  # fmt: skip
    assert sorted(members(img)) == ["bin/x.txt"]


# -- config ----------------------------------------------------------------------------------


def config_of(img: ImageBuild) -> dict[str, Any]:
    layout = OciLayout.open(img.layout)
    return layout.read_json(layout.read_manifest(img.manifest).config)


def test_config_on_busybox(ctx: Path, tmp_path: Path) -> None:
    make_busybox_base(tmp_path / "bases" / "bb")
    img = build(
        ctx, tmp_path / "out", tmp_path / "bases",
        base=f"oci:{tmp_path}/bases/bb:busybox",
        entrypoint=["/app/run.sh"], env={"B": "2", "A": "1", "PATH": "/app"}, labels={"k": "v"},
        copy=[{"src": "app/", "dst": "/app/"}],
    )  # fmt: skip
    cfg = config_of(img)
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert cfg["config"] == {
        "Entrypoint": ["/app/run.sh"],  # no Cmd: a new entrypoint drops the base's ["sh"]
        "Env": ["PATH=/app", "A=1", "B=2"],
        "Labels": {"k": "v"},
        "User": "0:0",
        "WorkingDir": "/",
    }
    assert len(cfg["rootfs"]["diff_ids"]) == 2
    assert [h["created_by"] for h in cfg["history"]] == ["ccpipe busybox base", "ccpipe copy app/ -> /app/"]
    manifest = OciLayout.open(img.layout).read_manifest(img.manifest)
    assert manifest.annotations is not None
    assert manifest.annotations["org.opencontainers.image.base.digest"] == img.base.manifest_digest


def test_base_settings_survive_unless_set(tmp_path: Path, ctx: Path) -> None:
    base_layout = OciLayout.create(tmp_path / "bases" / "b")
    base_cfg = {
        "architecture": "arm64", "os": "linux", "variant": "v8",
        "config": {"User": "app", "WorkingDir": "/srv", "Cmd": ["serve"], "Labels": {"a": "1"}, "Env": ["X=1"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }  # fmt: skip
    base_layout.write_image(base_cfg, [], tag="b")
    img = build(ctx, tmp_path / "out", tmp_path / "bases", base=f"oci:{tmp_path}/bases/b:b", labels={"b": "2"})
    cfg = config_of(img)
    assert (cfg["architecture"], cfg["variant"]) == ("arm64", "v8")
    assert cfg["config"] == {"User": "app", "WorkingDir": "/srv", "Cmd": ["serve"], "Labels": {"a": "1", "b": "2"},
                             "Env": ["X=1"]}  # fmt: skip


# -- hostile trees ---------------------------------------------------------------------------


def test_fifo_is_refused(ctx: Path, tmp_path: Path) -> None:
    os.mkfifo(ctx / "app/sub/pipe")
    with pytest.raises(SpecialFileRefused, match=r"app/sub/pipe in the repository is a FIFO") as err:
        build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/app/"}])
    assert err.value.code == "build.content.special"


def test_socket_is_refused(ctx: Path, tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(ctx / "app/sock"))
        with pytest.raises(SpecialFileRefused, match="socket"):
            build(ctx, tmp_path / "out", copy=[{"src": "app/sock", "dst": "/s"}])
    finally:
        s.close()


def test_device_is_refused(ctx: Path, tmp_path: Path) -> None:
    assert os.geteuid() == 0, "making a device node needs root (CI runs as root)"
    os.mknod(ctx / "app/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(SpecialFileRefused, match="character device"):
        build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/app/"}])


def test_symlinked_source_dir_leading_out_is_refused(ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret/key").write_text("k")
    os.symlink(tmp_path / "secret", ctx / "out")
    for src in ("out/", "out/key"):
        with pytest.raises(SymlinkEscape) as err:
            build(ctx, tmp_path / f"o{len(src)}", copy=[{"src": src, "dst": "/x/"}])
        assert err.value.code == "build.content.symlink"
    # without a trailing slash the link itself is copied, never what it points at
    assert members(build(ctx, tmp_path / "o", copy=[{"src": "out", "dst": "/x"}]))["x"].issym()


def test_symlink_inside_the_tree_may_be_followed(ctx: Path, tmp_path: Path) -> None:
    os.symlink("app/sub", ctx / "alias")
    assert sorted(members(build(ctx, tmp_path / "o", copy=[{"src": "alias/", "dst": "/a/"}]))) == ["a", "a/x.txt"]


@pytest.mark.parametrize(
    "spec",
    [
        {"src": "../outside", "dst": "/x"},
        {"src": "app/../../outside", "dst": "/x"},
        {"src": "/etc/passwd", "dst": "/x"},
        {"src": "app/", "dst": "/../x"},
        {"src": "app/", "dst": "relative"},
    ],
)
def test_dot_dot_is_refused_even_past_the_schema(ctx: Path, tmp_path: Path, spec: dict[str, str]) -> None:
    with pytest.raises(ValueError):  # the schema refuses first …
        CopySpec.model_validate(spec)
    copy = CopySpec.model_construct(src=spec["src"], dst=spec["dst"], mode=None, owner=None)
    smuggled = BuildRecipe.model_construct(copy_=[copy])
    with pytest.raises(PathEscape) as err:  # … and the core refuses again
        build_image(ctx, smuggled, tmp_path / "out", source_date_epoch=SDE)
    assert err.value.code == "build.content.path"


def test_non_utf8_name_is_refused(ctx: Path, tmp_path: Path) -> None:
    (ctx / os.fsdecode(b"app/bad\xff")).write_bytes(b"x")
    with pytest.raises(UnsupportedName, match="not UTF-8") as err:
        build(ctx, tmp_path / "out", copy=[{"src": "app/", "dst": "/app/"}])
    assert err.value.code == "build.content.name"


def test_base_path_outside_allowed_roots_is_refused(ctx: Path, tmp_path: Path, merged_usr_base: Path) -> None:
    from ccpipe.stages.build.errors import BaseForbidden

    with pytest.raises(BaseForbidden) as err:
        build(ctx, tmp_path / "out", None, base=f"oci:{merged_usr_base}/merged:latest")
    assert err.value.code == "build.base.forbidden"
    os.symlink(merged_usr_base / "merged", ctx / "baselink")
    with pytest.raises(SymlinkEscape):  # a relative path is in the repository, and stays there
        build(ctx, tmp_path / "out2", None, base="oci:baselink:latest")
