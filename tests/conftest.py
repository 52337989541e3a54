"""Shared fixtures: where the test vectors are, fresh ids, a private data directory."""

from __future__ import annotations

# rego-cpp before any library that loads libstdc++, as ccpipe's own processes load it
# (ccpipe.stages.attest.rego_first): otherwise every Rego evaluation in the suite leaks
import regopy  # noqa: F401

# isort: split
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# A suite started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
# ignored, and an ignored signal stays ignored across exec: the `ccpipe` processes the tests
# interrupt with Ctrl-C (SIGINT) would then never stop. Give them the default disposition.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real vectors copied from upstream projects; each folder's SOURCES.md names the origin, the
# licence and the verdict a correct implementation must reach.
VECTORS = REPO_ROOT / "tests" / "vectors"


def vector(folder: str, name: str) -> Path:
    """Path of one file of ``tests/vectors/<folder>/<name>``; raises FileNotFoundError if absent."""
    path = VECTORS / folder / name
    if not path.exists():
        raise FileNotFoundError(f"test vector {path} is missing")
    return path


@pytest.fixture
def vectors_dir() -> Path:
    """The test-vector folder, ``tests/vectors``."""
    return VECTORS


@pytest.fixture
def workload_id() -> str:
    """A fresh workload id, so tests can share one server."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private CCPIPE_DATA_DIR for one test."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("CCPIPE_DATA_DIR", str(d))
    yield d


@pytest.fixture(scope="session", autouse=True)
def _session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test runs with a throwaway CCPIPE_DATA_DIR: nothing is written under the user's home."""
    d = tmp_path_factory.mktemp("ccpipe-data")
    old = os.environ.get("CCPIPE_DATA_DIR")
    os.environ["CCPIPE_DATA_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("CCPIPE_DATA_DIR", None)
    else:
        os.environ["CCPIPE_DATA_DIR"] = old
