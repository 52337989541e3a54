"""The audit service: the live Merkle log of ``CCPIPE_EVENTS``, its index and its checkpoints.

One durable pull consumer (:data:`DURABLE`) reads **every** subject of ``CCPIPE_EVENTS`` in
stream order, in batches; each batch is logged (canonical bytes as Merkle leaves),
signature-checked and indexed in one database transaction (:class:`~ccpipe.pipeline.audit.ingest.Ingestor`)
that also records the last stream sequence, and only then acknowledged (``AckPolicy.ALL``
on the batch's last message). Resuming is therefore exact: on start the consumer is
(re)created to deliver from the store's last sequence + 1, so a crash between commit and ack
re-reads nothing twice and loses nothing (a redelivered message is skipped by the store).

Checkpoints. While the tree grows, a C2SP checkpoint signed by the log key
(:mod:`ccpipe.pipeline.audit.logkey`) is published every :data:`CHECKPOINT_INTERVAL_S` (0.5 s, so
an event is covered well within the 1 s promise): recorded in the store, and published on
NATS subject :data:`CHECKPOINT_SUBJECT` in its own stream :data:`AUDIT_STREAM`
(``deny_delete``, ``deny_purge``). **Not** as events on ``ccpipe.evt.>``: a checkpoint event
would itself become a leaf, which needs a newer checkpoint, forever — the log would never
be quiet and a checkpoint could never cover itself. Subscribers watch
``ccpipe.audit.checkpoint`` instead; ``Nats-Msg-Id`` = ``checkpoint-<size>`` makes a
republished checkpoint (after a restart) a no-op.

Database work runs in one dedicated thread (SQLite connections and the Merkle frontier are
not shared), so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.errors import AuditError
from ccpipe.pipeline.audit.ingest import AuditStore, Ingestor, KeyringFile, StreamMessage, prepare_rows
from ccpipe.pipeline.audit.logkey import log_signer
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.index_sql import IndexRow
from ccpipe.pipeline.audit.store.open import open_audit_store
from ccpipe.pipeline.bus import EVENTS_STREAM, connect, provision_stream
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import SUBJECT_PREFIX

log = logging.getLogger("ccpipe.audit")

AUDIT_STREAM = "CCPIPE_AUDIT"
"""Stream of the log's signed checkpoints."""
CHECKPOINT_SUBJECT = "ccpipe.audit.checkpoint"
"""Subject every signed checkpoint is published on (body: the C2SP signed note)."""
DURABLE = "ccpipe-audit-log"
"""Name of the audit log's durable consumer on ``CCPIPE_EVENTS``."""
CHECKPOINT_INTERVAL_S = 0.5
BATCH = 2000
"""Most messages fetched, checked and written per transaction. Under a backlog, 2,000 rather than
1,000 halves the commits, each of which writes every index page the batch dirtied: on a log of
a million events that took the sustained rate from ~9,300 to ~11,300 events/s. A trickle is
still written as it comes (a fetch returns what is there), so checkpoint latency is unchanged."""
POOL_MIN_BATCH = 200
"""Batches at least this large are prepared in the worker processes."""

T = TypeVar("T")


def audit_stream_config() -> StreamConfig:
    """The configuration of :data:`AUDIT_STREAM`."""
    return StreamConfig(
        name=AUDIT_STREAM,
        description="ccpipe: signed checkpoints of the audit log (C2SP tlog-checkpoint notes)",
        subjects=["ccpipe.audit.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=120.0,
    )


async def provision_audit_stream(js: JetStreamContext) -> None:
    """Create :data:`AUDIT_STREAM` if absent."""
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(audit_stream_config())


async def latest_published_checkpoint(js: JetStreamContext) -> bytes | None:
    """The last checkpoint note published on NATS, if any."""
    try:
        msg = await js.get_last_msg(AUDIT_STREAM, CHECKPOINT_SUBJECT)
    except NotFoundError:
        return None
    return bytes(msg.data or b"")


async def published_checkpoints(js: JetStreamContext, batch: int = 500) -> list[bytes]:
    """Every checkpoint note ever published on :data:`CHECKPOINT_SUBJECT`, oldest first (for
    ``audit verify``: each one the log signed must match the stream)."""
    try:
        info = await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        return []
    notes: list[bytes] = []
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                            filter_subject=CHECKPOINT_SUBJECT, inactive_threshold=30.0)
    sub = await js.pull_subscribe(CHECKPOINT_SUBJECT, stream=AUDIT_STREAM, config=config)
    try:
        while len(notes) < info.state.messages:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except TimeoutError:  # nats-py raises both its own and asyncio's TimeoutError
                break
            notes.extend(bytes(m.data) for m in msgs)
            if msgs and msgs[-1].metadata.sequence.stream >= info.state.last_seq:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return notes


@dataclass
class AuditLogService:
    """The running service; :func:`serve_audit_log` is the way to run it."""

    settings: Settings
    nats_url: str
    batch: int = BATCH
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    """Processes that check signatures and extract fields of large batches (0: in-process only)."""
    stats: dict[str, int] = field(default_factory=lambda: {"logged": 0, "batches": 0, "checkpoints": 0})
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="audit-db"))
    _store: AuditStore | None = None
    _nc: NatsClient | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _published_size: int = -1
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> tuple[AuditStore, Ingestor, NoteSigner]:
        store: AuditStore = open_audit_store(self.settings)
        signer = log_signer(self.settings.data_dir)
        keys = KeyringFile(keyring_path(self.settings.data_dir))
        return store, Ingestor(store, keys, workers=self.workers), signer

    async def start(self) -> None:
        """Open the store, connect, (re)create the consumer at the store's position, start the loops.

        Raises :class:`~ccpipe.schemas.errors.TransientError` if NATS does not answer and
        :class:`AuditError` if the store or keys cannot be opened.
        """
        self._store, self._ingestor, self._signer = await self._db(self._open)
        creds = str(self.settings.nats_creds) if self.settings.nats_creds else None
        self._nc = await connect(self.nats_url, name="ccpipe-audit", creds=creds)
        js = self._nc.jetstream()
        await provision_stream(js)
        await provision_audit_stream(js)
        self._js = js
        await self._publish_checkpoint(force=True)
        self._tasks = [asyncio.create_task(self._consume(), name="audit-consume"),
                       asyncio.create_task(self._checkpoints(), name="audit-checkpoints")]

    async def _subscribe(self) -> Any:
        assert self._store is not None
        last = await self._db(self._store.last_stream_seq) or 0
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(EVENTS_STREAM, DURABLE)
        config = ConsumerConfig(
            durable_name=DURABLE,
            description="ccpipe audit log: every event, in stream order",
            filter_subject=f"{SUBJECT_PREFIX}.>",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=last + 1,
            ack_policy=AckPolicy.ALL,
            ack_wait=60.0,
            max_ack_pending=self.batch * 4,
        )
        await self._js.add_consumer(EVENTS_STREAM, config)
        return await self._js.pull_subscribe_bind(DURABLE, stream=EVENTS_STREAM)

    def _prepare(self, batch: list[StreamMessage]) -> asyncio.Future[list[IndexRow]]:
        # A backlog is prepared by the worker processes; a trickle in the database thread,
        # where it adds no process hop to the checkpoint latency.
        if self.workers and len(batch) >= POOL_MIN_BATCH:
            return asyncio.wrap_future(self._ingestor.submit(batch))
        return asyncio.ensure_future(self._db(prepare_rows, self._ingestor.keys, batch))

    async def _commit(self, msgs: list[Any], batch: list[StreamMessage], rows: asyncio.Future[list[IndexRow]]) -> None:
        done = await self._db(self._ingestor.append, batch, await rows)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch, after the commit
        self.stats["logged"] += len(batch) - done.skipped
        self.stats["batches"] += 1
        self._grew.set()

    async def _resubscribe(self) -> Any:
        while True:
            await asyncio.sleep(1.0)
            try:
                return await self._subscribe()
            except Exception as exc:  # NATS away: keep trying, the store says where to resume
                log.warning("audit log: cannot resubscribe yet: %r", exc)

    async def _consume(self) -> None:
        sub = await self._subscribe()
        # One batch of look-ahead: batch N+1 is fetched and prepared while batch N is written.
        ahead: tuple[list[Any], list[StreamMessage], asyncio.Future[list[IndexRow]]] | None = None
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=0.05 if ahead else 1.0)
            except TimeoutError:  # nats-py raises both its own and asyncio's TimeoutError here
                msgs = []
            current = None
            if msgs:
                batch = [StreamMessage(m.metadata.sequence.stream, bytes(m.data),
                                       (m.headers or {}).get(SIGNATURE_HEADER)) for m in msgs]
                current = (msgs, batch, self._prepare(batch))
            if ahead is not None:
                try:
                    await self._commit(*ahead)
                except Exception as exc:
                    # A gap, a rewritten redelivery, a failed worker or database: nothing of the
                    # batch was acked, so start over from what the store holds.
                    why = exc.one_line() if isinstance(exc, AuditError) else repr(exc)
                    log.error("audit log: batch at %d not logged: %s; resubscribing", ahead[1][0].seq, why)
                    if current is not None:
                        current[2].cancel()
                    ahead = None
                    sub = await self._resubscribe()
                    continue
            ahead = current

    async def _publish_checkpoint(self, *, force: bool = False) -> None:
        assert self._store is not None
        size = await self._db(self._store.size)
        if size == self._published_size and not force:
            return
        note: bytes = await self._db(publish_checkpoint, self._store, self._signer)
        await self._js.publish(CHECKPOINT_SUBJECT, note, stream=AUDIT_STREAM,
                               headers={"Nats-Msg-Id": f"checkpoint-{size}"})
        self._published_size = size
        self.stats["checkpoints"] += 1

    async def _checkpoints(self) -> None:
        while True:
            await self._grew.wait()
            self._grew.clear()
            try:
                await self._publish_checkpoint()
            except Exception:  # keep logging events even if one publication fails
                log.exception("audit log: checkpoint not published")
            await asyncio.sleep(self.checkpoint_interval_s)

    async def stop(self) -> None:
        """Stop the loops, publish a last checkpoint, close NATS and the store."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._store is not None and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._publish_checkpoint()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        if self._store is not None:
            await self._db(self._store.close)
            self._ingestor.close()
        self._pool.shutdown(wait=True)

    async def wait_logged(self, seq: int, timeout: float = 30.0) -> None:
        """Wait until stream sequence ``seq`` is logged and covered by a published checkpoint
        (for tests and the benchmark); raises ``TimeoutError``."""
        assert self._store is not None
        async with asyncio.timeout(timeout):
            while (await self._db(self._store.last_stream_seq) or 0) < seq or self._published_size < seq:
                await asyncio.sleep(0.02)


@asynccontextmanager
async def serve_audit_log(settings: Settings, endpoints: Endpoints) -> AsyncIterator[Endpoints]:
    """Run the audit log while the block is open (a ``ServiceFactory``, see ``pipeline/app.py``).

    It serves no URL of its own (the HTTP API does), so the endpoints come back unchanged.
    """
    service = AuditLogService(settings, endpoints.nats_url)
    try:
        await service.start()
        yield endpoints
    finally:
        await service.stop()


@asynccontextmanager
async def running_audit_log(settings: Settings, nats_url: str, **options: Any) -> AsyncIterator[AuditLogService]:
    """Like :func:`serve_audit_log`, yielding the service itself (tests, benchmark, ``audit serve``)."""
    service = AuditLogService(settings, nats_url, **options)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()
