"""Fixtures of the multi-host tests: a :class:`Network` of stand-in machines, removed whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multihost.netns import Network, unavailable_reason

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    """A fresh network of machines (network namespaces); closed by the finaliser even when the test fails."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    net = Network(tmp_path / "hosts")
    try:
        yield net
    finally:
        net.close()
