"""Helpers of the build-stage tests: git repositories with fixed dates, layer inspection."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from ccpipe.stages.build.checkout import git_env

COMMIT_DATE = "2024-01-01T00:00:00Z"
COMMIT_EPOCH = 1704067200

SPEC = """\
[workload]
name = "hello"

[build]
base = "{base}"
entrypoint = ["/app/hello.sh"]
env = {{ GREETING = "hi" }}
workdir = "/app"
labels = {{ "org.example.team" = "ccpipe" }}

[[build.copy]]
src = "app/"
dst = "/app/"

[[build.copy]]
src = "app/data.txt"
dst = "/srv/data.txt"
mode = "0600"
owner = "1000:1000"

[tee]
types = ["sample"]
"""


def git(repo: Path, *args: str, date: str = COMMIT_DATE) -> str:
    """Run git in ``repo`` with fixed identity and dates."""
    env = git_env()
    env.update(
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org", GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date,
    )  # fmt: skip
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


MakeRepo = Callable[..., Path]
"""make_repo(files, *, date=..., executable=(), name=None) -> repository path."""


def hello_files(base: str) -> dict[str, bytes | tuple[str, str]]:
    """The demo-like repository: a script, a data file, an escaping symlink, a spec."""
    return {
        "ccpipe.toml": SPEC.format(base=base).encode(),
        "app/hello.sh": b'#!/bin/sh\necho "$GREETING"\n',
        "app/data.txt": b"data\n",
        "app/sub/deep.txt": b"deep\n",
        "app/evil": ("link", "/etc/passwd"),
        "README": b"not copied\n",
    }


def layer_members(blob: Path) -> dict[str, tarfile.TarInfo]:
    """Tar headers of a gzip layer blob, by name."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes())), mode="r:") as tar:
        return {m.name: m for m in tar.getmembers()}
