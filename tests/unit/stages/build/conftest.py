"""Fixtures of the build-stage tests: git repositories made on the spot, a busybox base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccpipe.stages.build.base.busybox import make_busybox_base
from tests.unit.stages.build.build_helpers import COMMIT_DATE, MakeRepo, git


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Make a git repository with ``files`` (path -> bytes, or ``('link', target)``) and one commit."""
    counter = iter(range(1000))

    def make(
        files: dict[str, bytes | tuple[str, str]],
        *,
        date: str = COMMIT_DATE,
        executable: tuple[str, ...] = (),
        name: str | None = None,
    ) -> Path:
        repo = tmp_path / (name or f"repo{next(counter)}")
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        for rel, content in files.items():
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, tuple):
                os.symlink(content[1], path)
            else:
                path.write_bytes(content)
                path.chmod(0o755 if rel in executable else 0o644)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "init", date=date)
        return repo

    return make


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout holding the busybox base, tagged ``busybox``."""
    root = tmp_path_factory.mktemp("bases") / "busybox"
    make_busybox_base(root, tag="busybox")
    return root
