"""Shared fixtures: where the shared test vectors are, fresh ids, a private data directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CCPIPE_SHARED_DIR", REPO_ROOT.parent / "shared"))
TESTDATA = SHARED / "testdata"


def vector(folder: str, name: str) -> Path:
    """Path of one file of ``../shared/testdata/<folder>/<name>``; fails loudly if absent."""
    path = TESTDATA / folder / name
    if not path.exists():
        raise FileNotFoundError(f"test vector {path} is missing: is ../shared beside the checkout?")
    return path


@pytest.fixture
def testdata() -> Path:
    """The shared test-vector folder."""
    if not TESTDATA.is_dir():
        raise FileNotFoundError(f"{TESTDATA} is missing: the shared folder must sit beside the checkout")
    return TESTDATA


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
