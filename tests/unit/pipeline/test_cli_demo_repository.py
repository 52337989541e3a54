"""The demo's sample repository: a hooked bare repository and a clone whose one commit is a buildable workload."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.pipeline.cli.demo_repository import DEMO_SPEC, make_demo_repository, run_git
from ccpipe.pipeline.trigger import HOOK_MARKER
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.workload import parse_workload_spec


def test_demo_repository_is_ready_to_push(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "left-over").write_text("from an earlier run")
    bare, work = make_demo_repository(tmp_path / "demo", tmp_path / "data")
    assert not (tmp_path / "demo" / "left-over").exists()
    assert HOOK_MARKER in (bare / "hooks" / "post-receive").read_text()
    assert run_git(work, "status", "--porcelain") == ""
    assert run_git(work, "log", "--format=%an <%ae>").strip() == "ccpipe demo <demo@ccpipe.invalid>"
    assert run_git(work, "remote", "get-url", "origin").strip() == str(bare)
    assert (work / "ccpipe.toml").read_text() == DEMO_SPEC
    spec = parse_workload_spec(DEMO_SPEC)
    assert spec.build.base == "oci:base:busybox"
    OciLayout.open(work / "base").resolve("busybox")
    out = subprocess.run(["sh", str(work / "app" / "hello.sh")], capture_output=True, text=True, check=True,
                         env={"GREETING": "hi"})  # fmt: skip
    assert out.stdout == "hi from a confidential workload built by ccpipe\n"


def test_git_failure_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        run_git(tmp_path, "log")
    assert err.value.code == "demo.git"
