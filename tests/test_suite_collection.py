"""Every test file in the tree is collected: pytest silently skips directories matching
``norecursedirs`` (its default list holds ``build``, which hid the build stage's tests once)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_test_file_sits_under_a_directory_pytest_skips() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["norecursedirs"]
    assert "build" not in patterns
    hidden = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        parts = path.relative_to(ROOT / "tests").parts[:-1]
        if "node_modules" in parts:
            continue
        if any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in patterns):
            hidden.append(str(path.relative_to(ROOT)))
    assert hidden == [], f"pytest never collects these: {hidden}"
