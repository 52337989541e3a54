"""The demo's sample repository: a bare repository with the ccpipe hook and a clone holding a workload.

The workload is a shell script on a busybox base that the repository carries as an OCI layout
(``oci:base:busybox``), so the demo needs no public registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

from ccpipe.pipeline.trigger import install_hook
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.build.base.busybox import make_busybox_base

DEMO_SPEC = """\
[workload]
name = "hello"

[build]
base = "oci:base:busybox"          # a busybox image kept in the repository itself
entrypoint = ["/app/hello.sh"]
env = { GREETING = "hello" }
workdir = "/app"

[[build.copy]]
src = "app/"
dst = "/app/"
mode = "0755"

[tee]
types = ["snp", "tdx"]
allow_emulated = true

[release]
policy = "default"
"""

DEMO_SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    echo "$GREETING from a confidential workload built by ccpipe"
    """)


def run_git(cwd: Path, *args: str) -> str:
    """Run ``git ARGS`` in ``cwd`` as the demo's author; returns stdout and stderr together.

    The caller's ``GIT_*`` variables are dropped, so an inherited ``GIT_DIR`` or
    ``GIT_WORK_TREE`` cannot point the commands at another repository. Raises
    :class:`ConfigurationError` (``demo.git``) when git fails.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="ccpipe demo", GIT_AUTHOR_EMAIL="demo@ccpipe.invalid",
               GIT_COMMITTER_NAME="ccpipe demo", GIT_COMMITTER_EMAIL="demo@ccpipe.invalid")
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        raise ConfigurationError(f"git {' '.join(args)} failed: {proc.stderr.strip()}", code="demo.git")
    return proc.stdout + proc.stderr


def make_demo_repository(root: Path, data_dir: Path) -> tuple[Path, Path]:
    """A bare repository with the ccpipe hook, and a working clone holding the sample workload.

    ``root`` is emptied first; returns ``(bare, work)``. The clone has one commit and the bare
    repository as its ``origin``, so ``git push origin main`` starts the pipeline.
    """
    if root.exists():
        shutil.rmtree(root)
    bare, work = root / "hello.git", root / "hello"
    root.mkdir(parents=True)
    run_git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    install_hook(bare, data_dir)
    run_git(root, "init", "-q", "-b", "main", str(work))
    (work / "app").mkdir()
    (work / "app" / "hello.sh").write_text(DEMO_SCRIPT)
    (work / "ccpipe.toml").write_text(DEMO_SPEC)
    # No route to public registries: the base is made here, from Debian's static busybox.
    make_busybox_base(work / "base", tag="busybox")
    run_git(work, "add", "-A")
    run_git(work, "commit", "-q", "-m", "hello: first version")
    run_git(work, "remote", "add", "origin", str(bare))
    return bare, work
