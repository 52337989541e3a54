"""``serve_audit_api``: the audit API and web page as a ``ccpipe up`` service.

A :data:`ccpipe.pipeline.app.ServiceFactory`: it serves on ``127.0.0.1`` (the data directory's
stable port unless one is given: :mod:`ccpipe.pipeline.ports`) while its block is open and
yields the endpoints with ``audit_api_url`` set. It only reads: the audit service (which
consumes the stream, logs, indexes and signs checkpoints) must be writing to the same
database, configured by the same settings.

The log's public key comes from the trail's keyring file (where the audit service registers
it); it is read when a proof is asked for, so the API may start before the first checkpoint.

Imports aiohttp and :mod:`pipeline` (audit, services, signing) only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path

from aiohttp import web

from ccpipe.pipeline.audit.checkpoint import parse_note
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.http.app import ReaderThread, audit_app
from ccpipe.pipeline.audit.http.limits import ApiLimits, listen
from ccpipe.pipeline.audit.http.reader import AuditReader
from ccpipe.pipeline.audit.liveness import read_status, status_path
from ccpipe.pipeline.ports import http_url, stable_port
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas.config import Settings

DEFAULT_HOST = "127.0.0.1"
"""Loopback by default: the trail names every workload, image and node; expose it on purpose."""


def keyring_log_key(data_dir: Path) -> Callable[[bytes], str]:
    """A function giving the verifier key (``name+hash+key``) that signed a checkpoint note,
    read from the keyring file at each call.

    The function raises :class:`CheckpointError` when no registered log key signed the note.
    """

    def log_key(note: bytes) -> str:
        path = keyring_path(data_dir)
        keys = Keyring.load(path).log_keys if path.exists() else []
        signed_by = {(s.name, s.key_hash) for s in parse_note(note).signatures}
        for verifier in keys:
            if (verifier.name, verifier.key_hash) in signed_by:
                return verifier.vkey
        raise CheckpointError(f"no log key in {path} signed the latest checkpoint",
                              hint="is the audit service running with this data directory?")

    return log_key


def open_store(settings: Settings) -> AuditReader:
    """An :class:`AuditReader` over the configured audit database and the keyring's log key.

    Both audit databases (SQLite, PostgreSQL) hold the Merkle log and its index together, so
    one connection answers both. Raises what :func:`ccpipe.pipeline.audit.store.open.open_index` raises.
    """
    from ccpipe.pipeline.audit.store.open import open_audit_store

    store = open_audit_store(settings)
    return AuditReader(store, store, keyring_log_key(settings.data_dir))


@asynccontextmanager
async def serve_reader(open_reader: Callable[[], AuditReader], limits: ApiLimits, *, host: str = DEFAULT_HOST,
                       port: int = 0, data_dir: Path | None = None) -> AsyncIterator[str]:
    """Serve the API over readers ``open_reader`` makes (one per reader thread) under ``limits``;
    yields the base URL (``http://host:port``). The readers are closed when the block ends.
    ``/readyz`` reports the audit service writing to ``data_dir`` (none given: never ready)."""
    def close(reader: AuditReader) -> None:
        reader.index.close()

    readers = (ReaderThread(open_reader, close), ReaderThread(open_reader, close, max_pending=limits.heavy_queries))
    app = audit_app(*readers) if data_dir is None else audit_app(*readers, partial(read_status, status_path(data_dir)))
    runner = web.AppRunner(app, access_log=None, **limits.runner_options())
    await runner.setup()
    server: asyncio.Server | None = None
    try:
        server = await listen(runner, host, port, limits)
        bound = server.sockets[0].getsockname()[1]  # the port the OS picked when port=0
        yield http_url(host, bound)
    finally:
        if server is not None:
            server.close()  # stop accepting; the runner's cleanup then ends open connections
        await runner.cleanup()
        if server is not None:
            await server.wait_closed()


def serve_audit_api(settings: Settings, endpoints: Endpoints, *, host: str | None = None,
                    port: int | None = None) -> AbstractAsyncContextManager[Endpoints]:
    """The service factory: serve the audit API and web page on ``host`` (default
    ``CCPIPE_LISTEN_HOST``, loopback unless set); yield ``endpoints`` with ``audit_api_url`` set.
    Raises ``OSError`` if ``host:port`` cannot be bound and :class:`ConfigurationError` if the
    stable port is taken."""
    return _serve(settings, endpoints, settings.listen_host if host is None else host, port)


@asynccontextmanager
async def _serve(settings: Settings, endpoints: Endpoints, host: str, port: int | None) -> AsyncIterator[Endpoints]:
    if port is None:
        port = await asyncio.to_thread(stable_port, settings, "audit_api")  # it may wait for the port
    async with serve_reader(lambda: open_store(settings), ApiLimits.of(settings), host=host, port=port,
                            data_dir=settings.data_dir) as url:
        yield endpoints.model_copy(update={"audit_api_url": url})
