"""What the sandbox runs and how: the image user resolved inside the image, the bwrap command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccpipe.enclave_runner.errors import SandboxError
from ccpipe.enclave_runner.sandbox.bwrap import bwrap_argv
from ccpipe.enclave_runner.sandbox.spec import RunSpec, resolve_user


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """An image root with an /etc/passwd and /etc/group and nothing to run."""
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    return r


def test_runner_sandbox_user_resolution(image_root: Path, tmp_path: Path) -> None:
    assert resolve_user(image_root, "") == (0, 0)
    assert resolve_user(image_root, "1000") == (1000, 0)
    assert resolve_user(image_root, "1000:1001") == (1000, 1001)
    assert resolve_user(image_root, "app") == (1234, 4321)
    with pytest.raises(SandboxError, match="'nobody' is not in the image's /etc/passwd"):
        resolve_user(image_root, "nobody")
    # a hostile image whose /etc/passwd links to the host's: never read
    (tmp_path / "host-passwd").write_text("app:x:0:0::/:/bin/sh\n")
    (image_root / "etc/passwd").unlink()
    os.symlink("../../host-passwd", image_root / "etc/passwd")
    with pytest.raises(SandboxError, match="not in the image's /etc/passwd"):
        resolve_user(image_root, "app")


def test_runner_sandbox_argv_shape(image_root: Path) -> None:
    argv = bwrap_argv(image_root, RunSpec(argv=("/app/run", "x"), env=(("A", "1"),), workdir="/w", uid=5, gid=6))
    assert argv[:2] == ["bwrap", "--unshare-all"] and "--share-net" not in argv
    assert argv[argv.index("--ro-bind") + 1: argv.index("--ro-bind") + 3] == [str(image_root), "/"]
    for flag in ("--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-3:] == ["--", "/app/run", "x"]
    assert "--share-net" in bwrap_argv(image_root, RunSpec(argv=("x",), network=True))
