"""Fixtures of the registry client's integration tests (the real registry comes from tests/integration)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from ccpipe.oci.registry import RegistryClient, RetryPolicy
from ccpipe.pipeline.servers import EmbeddedRegistry


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
