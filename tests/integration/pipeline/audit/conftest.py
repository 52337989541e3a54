"""Fixtures of the audit integration tests: a filled audit store on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.store.postgres import PostgresAudit
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.event_signature import ComponentKey
from tests.audit_journeys import Signers, signed_messages
from tests.integration.pipeline.audit.audit_pg import ThrowawayPostgres

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", "postgresql"]
Store = SqliteAudit | PostgresAudit


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A real PostgreSQL server for the whole session (initdb in a temporary directory)."""
    server = ThrowawayPostgres().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteAudit | PostgresAudit]:
    """An empty audit store of each backend."""
    store: SqliteAudit | PostgresAudit
    if request.param == "postgresql":
        store = PostgresAudit(request.getfixturevalue("postgres_server").new_database())
    else:
        store = SqliteAudit(tmp_path / "index.sqlite", synchronous="NORMAL")
    yield store
    store.close()


@pytest.fixture
def signers() -> Signers:
    return Signers()


@pytest.fixture
def keyring_file(tmp_path: Path, signers: Signers) -> KeyringFile:
    path = tmp_path / "keyring.json"
    signers.keyring.save(path)
    return KeyringFile(path)


def messages(signers: Signers, workloads: int, first_seq: int = 1) -> list[StreamMessage]:
    """Stream messages of ``workloads`` signed journeys, sequences from ``first_seq``."""
    return [StreamMessage(first_seq + i, data, sig)
            for i, (data, sig) in enumerate(signed_messages(signers, 0, workloads))]


@pytest.fixture
def filled(empty_store: Store, keyring_file: KeyringFile, signers: Signers) -> Store:
    """30 journeys (every tenth denied), then a key release altered after signing, one signed
    by a key the trail does not know, and an unsigned copy of the first event."""
    msgs = messages(signers, 30)
    ing = Ingestor(empty_store, keyring_file)
    ing.ingest(msgs[:100])
    ing.ingest(msgs[100:])
    seq = len(msgs) + 1
    rogue = ComponentKey.generate("attest")
    data = msgs[6].data.replace(b"node-000", b"node-299")  # a forged key.released, another node
    from ccpipe.pipeline.event_signature import signature_header

    ing.ingest([
        StreamMessage(seq, data, msgs[6].signature),
        StreamMessage(seq + 1, data, signature_header(rogue, data)),
        StreamMessage(seq + 2, msgs[0].data, None),
    ])
    return empty_store
