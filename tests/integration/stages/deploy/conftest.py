"""Fixtures of the registry client's integration tests (the real registry comes from tests/integration)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# tests/integration is on sys.path (its conftest is not in a package), so the folder
# tests/integration/stages would be imported as a namespace package named ``stages`` and hide
# the project's. Put the checkout first, and forget a namespace ``stages`` picked up already.
_ROOT = str(Path(__file__).resolve().parents[4])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("stages"), "__file__", "") is None:
    for _name in [n for n in sys.modules if n == "stages" or n.startswith("stages.")]:
        del sys.modules[_name]

from pipeline.servers import EmbeddedRegistry  # noqa: E402
from stages.deploy.registry import RegistryClient, RetryPolicy  # noqa: E402


@pytest.fixture
def repo() -> str:
    """A fresh repository name, so tests can share the session's registry."""
    return f"ccpipe-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(registry_server: EmbeddedRegistry) -> AsyncIterator[RegistryClient]:
    """A plain-HTTP client of the session's docker-registry, with quick retries."""
    async with RegistryClient(
        registry_server.address, plain_http=True, retry=RetryPolicy(attempts=4, initial_wait=0.05, max_wait=0.5)
    ) as c:
        yield c
