"""The pushed source as a sealed git pack: what the build host accepts, and what it refuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ccpipe.pipeline.artifacts import REF_PREFIX, ArtifactError, ArtifactRef, load_or_create_sealing_key, seal
from ccpipe.pipeline.enrolment import init_admin
from ccpipe.pipeline.source_bundles import (
    SourceBundleError,
    open_source,
    pack_source,
    seal_source,
    source_ref,
    unpack_source,
)
from ccpipe.stages.build.checkout import checkout_commit
from ccpipe.stages.build.provenance import ARTIFACT_PREFIX

ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "GIT_CONFIG_GLOBAL": os.devnull,
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], env=ENV, input=stdin, capture_output=True,
                          check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository of two commits; returns it and the second commit."""
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], env=ENV, check=True)
    (work / "app").mkdir()
    (work / "app" / "run.sh").write_text("#!/bin/sh\necho one\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "one")
    (work / "app" / "run.sh").write_text("#!/bin/sh\necho two\n")
    (work / "README").write_text("the second commit\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "two")
    return work, git(work, "rev-parse", "HEAD").decode().strip()


def crafted_pack(work: Path, commit: str, *, drop: str) -> bytes:
    """A pack of ``commit``'s objects without the one whose rev-list line ends with ``drop``."""
    lines = git(work, "rev-list", "--objects", "--no-walk", commit).decode().splitlines()
    kept = [line for line in lines if not (line.split(" ", 1)[0] == commit if drop == "<commit>"
                                            else line.endswith(" " + drop))]
    assert len(kept) == len(lines) - 1
    return git(work, "pack-objects", "--stdout", "-q", stdin=("\n".join(kept) + "\n").encode())


def test_the_sealed_snapshot_opens_on_the_build_host_and_checks_out_the_commit(repo: tuple[Path, str],
                                                                               tmp_path: Path) -> None:
    work, commit = repo
    key = load_or_create_sealing_key(tmp_path / "build-host", "build")
    sealed = seal_source(work, commit, [key.public_key()])
    assert b"echo two" not in sealed  # ciphertext only
    bare = open_source(sealed, key, tmp_path / "build" / "repo.git", commit, "refs/heads/main")
    assert git(bare, "rev-parse", "refs/heads/main").decode().strip() == commit
    # no history travels: the parent is not there, and git knows it is a shallow boundary
    assert git(bare, "rev-list", "--count", "refs/heads/main").decode().strip() == "1"
    out = checkout_commit(bare, commit, work_root=tmp_path)
    assert (out.path / "app" / "run.sh").read_text() == "#!/bin/sh\necho two\n"
    assert (out.path / "README").read_text() == "the second commit\n"


def test_a_by_hand_commit_without_a_full_ref_points_head_at_it(repo: tuple[Path, str], tmp_path: Path) -> None:
    work, commit = repo
    bare = unpack_source(pack_source(work, commit), tmp_path / "r.git", commit, commit)
    assert git(bare, "rev-parse", "HEAD").decode().strip() == commit


@pytest.mark.parametrize("drop", ["<commit>", "README"])
def test_a_pack_missing_the_commit_or_one_of_its_blobs_is_refused(repo: tuple[Path, str], tmp_path: Path,
                                                                   drop: str) -> None:
    work, commit = repo
    into = tmp_path / "r.git"
    with pytest.raises(SourceBundleError) as err:
        unpack_source(crafted_pack(work, commit, drop=drop), into, commit, "refs/heads/main")
    assert commit in err.value.message or "not a complete" in err.value.message
    assert not into.exists()  # nothing half-made is left for a checkout to read


def test_a_pack_of_another_commit_is_refused_naming_the_commit_the_event_names(repo: tuple[Path, str],
                                                                               tmp_path: Path) -> None:
    work, commit = repo
    parent = git(work, "rev-parse", "HEAD~1").decode().strip()
    with pytest.raises(SourceBundleError, match=f"does not hold commit {commit}"):
        unpack_source(pack_source(work, parent), tmp_path / "r.git", commit, "refs/heads/main")


def test_bytes_that_are_no_pack_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceBundleError, match="not a git pack"):
        unpack_source(b"tar or anything else", tmp_path / "r.git", "a" * 40, "refs/heads/main")
    with pytest.raises(SourceBundleError, match="not a full commit id"):
        unpack_source(b"PACK", tmp_path / "r.git", "main", "refs/heads/main")


def test_a_source_sealed_to_another_key_does_not_open(repo: tuple[Path, str], tmp_path: Path) -> None:
    work, commit = repo
    other = load_or_create_sealing_key(tmp_path / "other-host", "build")
    mine = load_or_create_sealing_key(tmp_path / "build-host", "build")
    with pytest.raises(ArtifactError, match="does not open with this host's sealing key"):
        open_source(seal_source(work, commit, [other.public_key()]), mine, tmp_path / "r.git", commit, "refs/heads/x")
    # nor does an unsealed pack pass for a sealed one
    with pytest.raises(ArtifactError, match="not sealed"):
        open_source(pack_source(work, commit), mine, tmp_path / "r.git", commit, "refs/heads/x")
    # an altered byte fails the GCM tag
    sealed = bytearray(seal(pack_source(work, commit), [mine.public_key()]))
    sealed[-1] ^= 1
    with pytest.raises(ArtifactError, match="does not open"):
        open_source(bytes(sealed), mine, tmp_path / "r.git", commit, "refs/heads/x")


def test_an_unknown_commit_is_a_clear_error_naming_the_repository(repo: tuple[Path, str]) -> None:
    work, _ = repo
    with pytest.raises(SourceBundleError, match=f"commit {'b' * 12} of {work} cannot be packed"):
        pack_source(work, "b" * 40)


def test_a_local_path_is_refused_where_components_are_enrolled(tmp_path: Path) -> None:
    bare, enrolled = tmp_path / "bare", tmp_path / "enrolled"
    assert source_ref(bare, "/srv/git/app.git") is None  # library use on one host: a path is read
    init_admin(enrolled)
    with pytest.raises(SourceBundleError, match="local path '/srv/git/app.git'") as err:
        source_ref(enrolled, "/srv/git/app.git")
    assert err.value.code == "source.path"
    digest = "sha256:" + "ab" * 32
    ref = source_ref(enrolled, f"{REF_PREFIX}CCPIPE_ARTIFACTS/wl-1/source/{'ab' * 32}@{digest}")
    assert ref == ArtifactRef(f"wl-1/source/{'ab' * 32}", digest)
    with pytest.raises(SourceBundleError, match="not a pushed source"):
        source_ref(enrolled, f"{REF_PREFIX}CCPIPE_ARTIFACTS/wl-1/plain/{'ab' * 32}@{digest}")
    with pytest.raises(ArtifactError, match="not a valid artifact reference"):
        source_ref(enrolled, f"{REF_PREFIX}OTHER_BUCKET/wl-1/source/x@{digest}")


def test_the_provenance_names_artifacts_with_the_artifact_prefix() -> None:
    assert ARTIFACT_PREFIX == REF_PREFIX
