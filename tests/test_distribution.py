"""The built distribution: one top-level import name, and the data files the code reads at run time.

A wheel is built from a copy of the source (pyproject.toml, README.md, ``ccpipe/``) so that a stale
``build/`` folder in the checkout cannot hide a missing or extra file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "ccpipe", src / "ccpipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("ccpipe-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_only_top_level_import_name_is_ccpipe(wheel_names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"ccpipe"}


def test_every_source_module_and_data_file_is_in_the_wheel(wheel_names: list[str]) -> None:
    shipped = set(wheel_names)
    wanted = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "ccpipe").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".md"}
    }
    assert wanted - shipped == set()


def test_the_console_script_is_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(name).decode()
    assert "[console_scripts]\nccpipe = ccpipe.pipeline.cli.main:run" in text
