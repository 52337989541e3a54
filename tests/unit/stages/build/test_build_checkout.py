"""Checkout of a commit: exact blob bytes in a private tree, nothing the repository asks to run."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccpipe.stages.build.checkout import checkout_commit, resolve_commit
from ccpipe.stages.build.errors import CheckoutFailed
from tests.unit.stages.build.build_helpers import COMMIT_EPOCH, MakeRepo, git


def test_tree_modes_links_and_times(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo(
        {"run.sh": b"#!/bin/sh\n", "a/b/c.txt": b"c\n", "link": ("link", "/etc/passwd"), "rel": ("link", "a/b")},
        executable=("run.sh",),
    )
    co = checkout_commit(repo, "main", work_root=tmp_path)
    assert co.commit == git(repo, "rev-parse", "HEAD")
    assert co.commit_time == COMMIT_EPOCH
    assert stat.S_IMODE(co.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((co.path / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((co.path / "a/b/c.txt").stat().st_mode) == 0o644
    assert (co.path / "a/b/c.txt").read_bytes() == b"c\n"
    assert os.readlink(co.path / "link") == "/etc/passwd"  # a link, never its target's content
    assert os.readlink(co.path / "rel") == "a/b"
    for p in [co.path / "run.sh", co.path / "a", co.path / "a/b", co.path / "link"]:
        assert p.lstat().st_mtime == COMMIT_EPOCH
    assert not (co.path / ".git").exists()


def test_commit_time_is_the_committer_time(make_repo: MakeRepo) -> None:
    repo = make_repo({"f": b"x"}, date="2030-06-01T12:00:00+02:00")
    commit, when = resolve_commit(repo, "HEAD")
    assert when == int(datetime(2030, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    assert resolve_commit(repo, commit) == (commit, when)


@pytest.mark.parametrize(
    "repo_name, ref, needle",
    [
        ("absent", "main", "absent does not exist"),
        ("plain", "main", "plain"),
        ("ok", "no-such-branch", "no-such-branch"),
        ("ok", "--upload-pack=touch /tmp/x", "not a usable ref"),
        ("ok", "main\nHEAD", "not a usable ref"),
    ],
)
def test_unreadable_repo_or_ref(make_repo: MakeRepo, tmp_path: Path, repo_name: str, ref: str, needle: str) -> None:
    make_repo({"f": b"x"}, name="ok")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckoutFailed) as err:
        checkout_commit(tmp_path / repo_name, ref, work_root=tmp_path)
    assert err.value.code == "build.checkout"
    assert needle in err.value.message


def test_bare_repository(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo({"f": b"bare\n"})
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    co = checkout_commit(bare, "refs/heads/main", work_root=tmp_path)
    assert (co.path / "f").read_bytes() == b"bare\n"


def test_no_hooks_filters_or_export_substitution(make_repo: MakeRepo, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    repo = make_repo(
        {
            ".gitattributes": b"*.txt filter=evil ident\nsubst.c export-subst\n",
            "f.txt": b"$Id$\n",
            "subst.c": b"$Format:%H %cr$\n",
        }
    )
    git(repo, "config", "filter.evil.smudge", f"touch {marker}; cat")
    hook = repo / ".git/hooks/post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    co = checkout_commit(repo, "HEAD", work_root=tmp_path)
    assert (co.path / "f.txt").read_bytes() == b"$Id$\n"
    assert (co.path / "subst.c").read_bytes() == b"$Format:%H %cr$\n"
    assert not marker.exists()


def test_replace_refs_cannot_swap_content(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo({"f": b"real\n"})
    real = git(repo, "rev-parse", "HEAD")
    (repo / "f").write_bytes(b"swapped\n")
    git(repo, "commit", "-qam", "other")
    other = git(repo, "rev-parse", "HEAD")
    git(repo, "replace", real, other)
    plain = subprocess.run(["git", "show", f"{real}:f"], cwd=repo, capture_output=True, check=True, env={})
    assert plain.stdout == b"swapped\n"  # plain git is fooled
    co = checkout_commit(repo, real, work_root=tmp_path)
    assert (co.path / "f").read_bytes() == b"real\n"


def test_submodule_becomes_an_empty_directory(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo({"f": b"x"})
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/sub")
    git(repo, "commit", "-qm", "submodule")
    co = checkout_commit(repo, "HEAD", work_root=tmp_path)
    assert (co.path / "vendor/sub").is_dir()
    assert list((co.path / "vendor/sub").iterdir()) == []


def _crafted_commit(repo: Path, entries: list[tuple[str, bytes, str]]) -> str:
    """A commit whose root tree is written byte by byte (git's own tools refuse these names)."""
    raw = b""
    for mode, name, oid in entries:
        raw += mode.encode() + b" " + name + b"\0" + bytes.fromhex(oid)
    tree = subprocess.run(
        ["git", "hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
        cwd=repo, input=raw, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    return git(repo, "commit-tree", tree, "-m", "crafted")


@pytest.mark.parametrize("name", [b"..", b".git", b".GIT", b"."])
def test_crafted_tree_paths_are_refused(make_repo: MakeRepo, tmp_path: Path, name: bytes) -> None:
    repo = make_repo({"f": b"x"})
    blob = git(repo, "rev-parse", "HEAD:f")
    commit = _crafted_commit(repo, [("100644", name, blob)])
    with pytest.raises(CheckoutFailed) as err:
        checkout_commit(repo, commit, work_root=tmp_path)
    assert err.value.code == "build.checkout.unsafe_path"
    assert not list(tmp_path.glob("ccpipe-build-*")), "partial checkout left behind"


def test_crafted_tree_cannot_write_through_its_own_symlink(make_repo: MakeRepo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = make_repo({"f": b"x", "l": ("link", str(outside))})
    blob, link = git(repo, "rev-parse", "HEAD:f"), git(repo, "rev-parse", "HEAD:l")
    sub = (
        subprocess.run(
            ["git", "mktree"], cwd=repo, input=f"100644 blob {blob}\tpwned\n".encode(), capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    # 'd' is a symlink to outside/, then a tree named 'd' again: writing d/pwned would escape.
    commit = _crafted_commit(repo, [("120000", b"d", link), ("40000", b"d", sub)])
    with pytest.raises(CheckoutFailed):
        checkout_commit(repo, commit, work_root=tmp_path)
    assert not (outside / "pwned").exists()


def test_large_file_is_exact(make_repo: MakeRepo, tmp_path: Path) -> None:
    big = os.urandom(3 << 20) * 4
    repo = make_repo({"big.bin": big})
    co = checkout_commit(repo, "HEAD", work_root=tmp_path)
    assert (co.path / "big.bin").read_bytes() == big


def test_destination_must_be_empty(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo({"f": b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "junk").write_text("x")
    with pytest.raises(CheckoutFailed, match="not empty"):
        checkout_commit(repo, "HEAD", dest)


def test_environment_git_variables_are_ignored(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo({"f": b"mine\n"})
    decoy = make_repo({"f": b"decoy\n"})
    monkeypatch.setenv("GIT_DIR", str(decoy / ".git"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(decoy / ".git/objects"))
    co = checkout_commit(repo, "HEAD", work_root=tmp_path)
    assert (co.path / "f").read_bytes() == b"mine\n"
