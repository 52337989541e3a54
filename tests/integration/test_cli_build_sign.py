"""``ccpipe build`` and the signing commands as a user runs them (subprocess, real skopeo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.stages.build.build_helpers import git

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "pipeline.cli.main"]
SPEC = """[workload]
name = "hello"
[build]
entrypoint = ["/app/hello.sh"]
env = { GREETING = "hi" }
[[build.copy]]
src = "app/"
dst = "/app/"
mode = "0755"
[tee]
types = ["snp"]
"""


def ccpipe(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CCPIPE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CCPIPE_DATA_DIR": str(data_dir), **env},
    )


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the demo workload, one commit."""
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / "app" / "hello.sh").write_text('#!/bin/sh\necho "$GREETING"\n')
    (root / "ccpipe.toml").write_text(SPEC)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def built(tmp_path: Path, repo: Path) -> Path:
    """``ccpipe build`` of the repository into a layout; returns the layout directory."""
    out = tmp_path / "plain"
    r = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_build_twice_same_digest_and_skopeo_reads_it(tmp_path: Path, repo: Path) -> None:
    clone = tmp_path / "elsewhere" / "clone"
    clone.parent.mkdir()
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    first = ccpipe(tmp_path / "d1", "build", str(repo), "--out", str(tmp_path / "a"))
    second = ccpipe(tmp_path / "d2", "build", str(clone), "--ref", "main", "--out", str(tmp_path / "b"), "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    digest = first.stdout.strip()
    info = json.loads(second.stdout)
    assert digest.startswith("sha256:") and info["image_digest"] == digest
    assert info["commit"] == git(repo, "rev-parse", "HEAD")
    assert info["provenance"]["subject"][0]["digest"]["sha256"] == digest.removeprefix("sha256:")

    inspected = skopeo("inspect", f"oci:{tmp_path / 'a'}:hello")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest
    config = skopeo("inspect", "--config", f"oci:{tmp_path / 'b'}:hello")
    assert config.returncode == 0, config.stderr
    doc = json.loads(config.stdout)
    assert doc["config"]["Entrypoint"] == ["/app/hello.sh"] and "GREETING=hi" in doc["config"]["Env"]


def test_build_of_a_missing_ref_fails_with_one_sentence(tmp_path: Path, repo: Path) -> None:
    r = ccpipe(tmp_path / "data", "build", str(repo), "--ref", "no-such-branch", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stdout == ""
    line = one_sentence(r.stderr)
    assert "no-such-branch" in line and str(repo) in line


def test_build_refuses_a_base_outside_the_allowed_dirs(tmp_path: Path, repo: Path, built: Path) -> None:
    spec = (repo / "ccpipe.toml").read_text().replace("[build]\n", f'[build]\nbase = "oci:{built}:hello"\n')
    (repo / "ccpipe.toml").write_text(spec)
    git(repo, "commit", "-q", "-am", "base")
    refused = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(tmp_path / "o"))
    assert refused.returncode == 1 and "not under an allowed base directory" in one_sentence(refused.stderr)
    allowed = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(tmp_path / "o"), "--base-dir", str(built))
    assert allowed.returncode == 0, allowed.stderr
