"""The web page's assets: served by name, installed with the package, self-contained."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from ccpipe.pipeline.audit.http.app import STATIC_FILES
from tests.conftest import REPO_ROOT

STATIC = REPO_ROOT / "ccpipe" / "pipeline" / "audit" / "http" / "static"


def test_every_asset_is_served_and_every_served_asset_exists() -> None:
    assert {p.name for p in STATIC.iterdir() if p.is_file()} == set(STATIC_FILES)


def test_every_asset_is_installed_as_package_data() -> None:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["ccpipe.pipeline.audit.http"]
    for path in STATIC.iterdir():
        rel = path.relative_to(STATIC.parent).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would be missing from an installed ccpipe"


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{path.name} refers to another site"
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all('src="/static/' in s for s in scripts)  # no inline script (the CSP forbids it)
    assert "style=" not in html
