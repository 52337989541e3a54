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

Never silent. Any failure of the loop (NATS away, the store failing, a rewritten redelivery)
is retried from the store's position after a capped, jittered backoff, and reported: a log
line, a JSON status on :data:`STATUS_SUBJECT` when the bus answers, and the status file the
audit API's ``/readyz`` reads (:mod:`ccpipe.pipeline.audit.liveness`), which also carries the
ingest lag. Before it signs anything, and whenever it takes over, the service re-hashes the
store's tail against the stream's messages at those sequences and refuses a store that
differs (:class:`~ccpipe.pipeline.audit.liveness.StoreMismatch`: nothing more is written or
signed); a stream that is missing, re-created, purged or shrunk is named at start and, once a
second, while running.

One writer. Any number of services may follow the stream; the holder of the writer lease
(:mod:`ccpipe.pipeline.audit.lease`) logs and signs, the others are hot standbys that take
over within the lease's TTL when it dies.

Database work runs in one dedicated thread (SQLite connections and the Merkle frontier are
not shared), so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.errors import AuditError
from ccpipe.pipeline.audit.ingest import AuditStore, Ingestor, KeyringFile, StreamMessage, prepare_rows
from ccpipe.pipeline.audit.lease import LEASE_TTL_S, WriterLease, lease_bucket
from ccpipe.pipeline.audit.liveness import (
    AuditState,
    AuditStatus,
    StoreMismatch,
    StreamMark,
    status_path,
    stream_problem,
    tail_problem,
    write_status,
)
from ccpipe.pipeline.audit.logkey import log_signer
from ccpipe.pipeline.audit.publisher import last_checkpoint, publish_checkpoint
from ccpipe.pipeline.audit.store.index_sql import IndexRow
from ccpipe.pipeline.audit.store.interface import StoredLeaf
from ccpipe.pipeline.audit.store.open import open_audit_store
from ccpipe.pipeline.bus import (
    EVENTS_STREAM,
    close_within,
    cluster_replicas,
    connect_as,
    provision_stream,
    require_replicas,
)
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.event_trust import refresh_trusted_keys
from ccpipe.pipeline.periodic import cancel_and_wait, stop_if_cancelled
from ccpipe.pipeline.reader import ephemeral_pull, iter_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import keyring_path
from ccpipe.pipeline.telemetry.metrics import set_audit_lag
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
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
STATUS_SUBJECT = "ccpipe.audit.status"
"""Subject of the service's state changes (JSON: :meth:`AuditStatus.to_json`), in :data:`AUDIT_STREAM`."""
STATUS_INTERVAL_S = 1.0
"""How often the stream is asked for its identity and last sequence (the lag) and the status file rewritten."""
TAIL_CHECK = 256
"""Leaves re-hashed against the stream before signing, besides every leaf after the last checkpoint."""
MAX_BACKOFF_S = 15.0
"""Longest wait between two attempts after a failure."""
MARK_FILE = "stream.json"
"""In the data directory's ``audit/``: the identity of the stream the log follows (:class:`StreamMark`)."""

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
    """Create :data:`AUDIT_STREAM` if absent (on :func:`cluster_replicas` servers); refuse one with fewer."""
    want = cluster_replicas(js)
    try:
        info = await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        info = await js.add_stream(audit_stream_config().evolve(num_replicas=want))
    require_replicas(AUDIT_STREAM, info.config.num_replicas, want)


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
    sub = await ephemeral_pull(js, AUDIT_STREAM, config)
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


def backoff_s(failures: int, *, base: float = 0.25, cap: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait after ``failures`` failures in a row: exponential, capped, fully jittered
    (processes that failed together do not retry together)."""
    return random.uniform(base, max(base, min(cap, base * 2 ** failures)))


class StreamTrouble(AuditError):
    """The stream the log follows is missing, re-created, purged or shrunk."""

    code = "audit.stream.changed"
    default_hint = ("the log cannot continue on another stream's sequences: restore the stream, or move the "
                    "audit store aside to start a new log; `ccpipe audit verify` compares what is left")


@dataclass
class AuditLogService:
    """The running service; :func:`serve_audit_log` is the way to run it."""

    settings: Settings
    nats_url: str
    batch: int = BATCH
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    """Processes that check signatures and extract fields of large batches (0: in-process only)."""
    lease_ttl_s: float = LEASE_TTL_S
    """TTL of the writer lease bucket when this service creates it."""
    status_interval_s: float = STATUS_INTERVAL_S
    tail_check: int = TAIL_CHECK
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    """Names this process in the lease, the status and its messages."""
    stats: dict[str, int] = field(default_factory=lambda: {"logged": 0, "batches": 0, "checkpoints": 0,
                                                            "failures": 0, "takeovers": 0})
    status: AuditStatus = field(default_factory=lambda: AuditStatus(AuditState.STARTING))
    refused: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the store was found not to match the stream: the service writes and signs nothing more."""
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="audit-db"))
    _store: AuditStore | None = None
    _ingestor: Ingestor | None = None
    _nc: NatsClient | None = None
    _lease: WriterLease | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _published_size: int = -1
    _logged_seq: int = 0
    _followed: StreamMark | None = None
    _trouble: str | None = None
    _standing_by: bool = False
    """Stood by and has not written since: the status file is the writer's, not this process's."""
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> tuple[AuditStore, NoteSigner]:
        store: AuditStore = open_audit_store(self.settings)
        return store, log_signer(self.settings.data_dir)

    async def start(self) -> None:
        """Open the store, connect, check the store against the stream, start the loops.

        Raises :class:`~ccpipe.schemas.errors.TransientError` if NATS does not answer,
        :class:`StoreMismatch` if the store's tail differs from the stream (nothing is signed)
        and :class:`AuditError` if the store or keys cannot be opened.
        """
        self._store, self._signer = await self._db(self._open)
        self._logged_seq = await self._db(self._store.last_stream_seq) or 0
        self._nc = await connect_as(self.settings, self.nats_url, Component.AUDIT)
        js = self._nc.jetstream()
        self._js = js
        if self._logged_seq == 0:
            await provision_stream(js)  # a new log may create the stream; an old one must find its own
        await provision_audit_stream(js)
        self._lease = WriterLease(await lease_bucket(js, self.lease_ttl_s), self.holder, self.lease_ttl_s)
        self._followed = _read_mark(self._mark_path)
        try:
            await self._check_stream()
            await self._check_tail()
        except StoreMismatch as exc:
            await self._refuse(exc)
            raise
        except StreamTrouble as exc:  # named now; the loop keeps retrying (maybe the stream comes back)
            await self._set(AuditState.DEGRADED, exc.message)
        self._tasks = [asyncio.create_task(self._run(), name="audit-run"),
                       asyncio.create_task(self._checkpoints(), name="audit-checkpoints"),
                       asyncio.create_task(self._watch(), name="audit-watch"),
                       asyncio.create_task(self._renew(), name="audit-lease")]

    # -- state -----------------------------------------------------------------------------

    @property
    def _status_path(self) -> Path:
        return status_path(self.settings.data_dir)

    @property
    def _mark_path(self) -> Path:
        return self.settings.data_dir / "audit" / MARK_FILE

    def _leading(self) -> bool:
        return self._lease is not None and self._lease.held() and not self.refused.is_set()

    async def _set(self, state: AuditState, reason: str = "") -> None:
        """Change state: log it, write the status file, and tell the bus if it is there."""
        before = self.status
        self.status = replace(before, state=state, reason=reason, holder=self.holder, logged_seq=self._logged_seq)
        if (before.state, before.reason) == (state, reason):
            return
        level = {AuditState.DEGRADED: logging.WARNING, AuditState.REFUSED: logging.ERROR}.get(state, logging.INFO)
        log.log(level, "audit log %s: %s%s", self.holder, state.value, f": {reason}" if reason else "")
        self._write_status()
        if self._nc is not None and self._nc.is_connected:
            body = json.dumps(self.status.to_json()).encode()
            with contextlib.suppress(Exception):  # reporting must never stop the log
                await self._js.publish(STATUS_SUBJECT, body, stream=AUDIT_STREAM, timeout=2.0)

    def _write_status(self) -> None:
        # One status file per data directory: a standby leaves it to the process that writes.
        if self.status.state in (AuditState.LEADING, AuditState.STANDBY):
            self._standing_by = self.status.state is AuditState.STANDBY
        if self._standing_by and self.status.state is not AuditState.REFUSED:
            return
        try:
            write_status(self._status_path, replace(self.status, logged_seq=self._logged_seq))
        except OSError as exc:
            log.warning("audit log: status not written to %s: %s", self._status_path, exc)

    async def _refuse(self, exc: StoreMismatch) -> None:
        self.refused.set()
        await self._set(AuditState.REFUSED, exc.message)
        if self._lease is not None:
            with contextlib.suppress(Exception):  # a standby will refuse too, on the same evidence
                await self._lease.release()

    # -- checks ------------------------------------------------------------------------------

    async def _stream_mark(self) -> StreamMark | None:
        try:
            info = await self._js.stream_info(EVENTS_STREAM)
        except NotFoundError:
            return None
        created = info.created.isoformat() if info.created else None
        return StreamMark(created, info.state.first_seq, info.state.last_seq)

    async def _check_stream(self) -> StreamMark:
        """Raise :class:`StreamTrouble` if the stream is not the one the log followed."""
        now = await self._stream_mark()
        self.status = replace(self.status, stream_last_seq=None if now is None else now.last_seq)
        problem = stream_problem(EVENTS_STREAM, self._logged_seq, self._followed, now)
        if problem is not None or now is None:
            raise StreamTrouble(problem or f"stream {EVENTS_STREAM} is missing")
        return now

    async def _check_tail(self) -> None:
        """Raise :class:`StoreMismatch` if a leaf after the last checkpoint, or one of the last
        :attr:`tail_check` leaves, differs from the stream's message at its sequence."""
        assert self._store is not None
        store = self._store

        def tail() -> list[StoredLeaf]:
            size = store.size()
            latest = last_checkpoint(store)
            signed = latest.size if latest is not None else 0
            return list(store.leaves(max(0, min(signed, size - self.tail_check)), size))

        leaves: list[StoredLeaf] = await self._db(tail)
        if not leaves:
            return
        wanted = {leaf.stream_seq for leaf in leaves}
        stream: dict[int, bytes] = {}
        async for stored in iter_events(self._js, start_seq=min(wanted), batch=1000):
            if stored.seq in wanted:
                stream[stored.seq] = stored.data
            if stored.seq >= max(wanted):
                break
        problem = tail_problem(leaves, stream)
        if problem is not None:
            raise StoreMismatch(f"refusing to sign a checkpoint: the audit store's {problem}")

    # -- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        """Follow the stream while holding the lease; wait as a standby otherwise; retry any failure."""
        assert self._lease is not None
        failures = 0
        while not self.refused.is_set():
            stop_if_cancelled()  # a cancellation swallowed by nats-py in the last round still stops the loop
            try:
                if not self._lease.held() and not await self._lease.acquire():
                    holder = await self._lease.current_holder()
                    await self._set(AuditState.STANDBY, f"{holder or 'another process'} holds the writer lease")
                    await asyncio.sleep(self._lease.ttl_s / 4)
                    continue
                self.stats["takeovers"] += 1
                if await self._follow():
                    failures = 0
            except StoreMismatch as exc:
                await self._refuse(exc)
                return
            except Exception as exc:  # anything else: say so, wait, try again from the store's position
                self.stats["failures"] += 1
                why = exc.one_line() if isinstance(exc, AuditError) else f"{type(exc).__name__}: {exc}"
                await self._set(AuditState.DEGRADED, why)
                await asyncio.sleep(backoff_s(failures))
                failures += 1

    async def _follow(self) -> bool:
        """Check, then log the stream until the lease is lost (returns) or something fails (raises).

        Returns True if at least one batch was logged (the failure count starts over).
        """
        assert self._store is not None
        await self._db(self._store.close)  # a fresh connection: another writer held the store meanwhile
        self._store, self._signer = await self._db(self._open)
        self._logged_seq = await self._db(self._store.last_stream_seq) or 0
        now = await self._check_stream()
        await self._check_tail()
        if self._followed != now:
            self._followed = now
            await self._db(_write_mark, self._mark_path, now)
        self._trouble = None
        ingestor = Ingestor(self._store, KeyringFile(keyring_path(self.settings.data_dir)), workers=self.workers)
        self._ingestor = ingestor
        logged_any = False
        try:
            await self._publish_checkpoint(force=True)
            sub = await self._subscribe()
            await self._set(AuditState.LEADING)
            # One batch of look-ahead: batch N+1 is fetched and prepared while batch N is written.
            ahead: tuple[list[Any], list[StreamMessage], asyncio.Future[list[IndexRow]]] | None = None
            while True:
                if self._trouble is not None:
                    raise StreamTrouble(self._trouble)
                if not self._lease_held():
                    log.warning("audit log %s: writer lease lost; standing by", self.holder)
                    return logged_any
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
                        if not self._lease_held():  # never write after the lease could have passed on
                            return logged_any
                        await self._commit(*ahead)
                    except BaseException:
                        if current is not None:
                            current[2].cancel()
                        raise
                    logged_any = True
                    if self.status.state is not AuditState.LEADING:
                        await self._set(AuditState.LEADING)
                ahead = current
        finally:
            self._ingestor = None
            ingestor.close()

    def _lease_held(self) -> bool:
        return self._lease is not None and self._lease.held()

    async def _subscribe(self) -> Any:
        last = self._logged_seq
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
        assert self._ingestor is not None
        if self.workers and len(batch) >= POOL_MIN_BATCH:
            return asyncio.wrap_future(self._ingestor.submit(batch))
        return asyncio.ensure_future(self._db(prepare_rows, self._ingestor.keys, batch))

    async def _commit(self, msgs: list[Any], batch: list[StreamMessage], rows: asyncio.Future[list[IndexRow]]) -> None:
        assert self._ingestor is not None
        prepared = await rows
        if any(r.signature == "unknown_key" for r in prepared) and await refresh_trusted_keys(self.settings.data_dir):
            # a component enrolled since the mirror last looked: judge the batch against the fresh keys
            prepared = await self._db(prepare_rows, self._ingestor.keys, batch)
        done = await self._db(self._ingestor.append, batch, prepared)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch, after the commit
        self._logged_seq = max(self._logged_seq, batch[-1].seq)
        self.stats["logged"] += len(batch) - done.skipped
        self.stats["batches"] += 1
        self._grew.set()

    async def _publish_checkpoint(self, *, force: bool = False) -> None:
        assert self._store is not None
        if not self._leading():  # only the lease holder signs; a refused store is never signed
            return
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

    async def _renew(self) -> None:
        """Renew the lease while holding it (a third of the TTL apart)."""
        assert self._lease is not None
        while True:
            await asyncio.sleep(self._lease.ttl_s / 3)
            try:
                if self._lease.held() and not await self._lease.renew():
                    log.warning("audit log %s: another process took the writer lease", self.holder)
            except Exception as exc:  # NATS away: the lease lapses by itself, the writer stops in time
                log.warning("audit log %s: writer lease not renewed: %r", self.holder, exc)

    async def _watch(self) -> None:
        """Every :attr:`status_interval_s`: the stream's identity and the lag, into the status."""
        while True:
            await asyncio.sleep(self.status_interval_s)
            if self.refused.is_set():
                self._write_status()
                continue
            try:
                now = await self._stream_mark()
                self.status = replace(self.status, stream_last_seq=None if now is None else now.last_seq)
                await self._record_lag(now)
                if self.status.state is AuditState.LEADING:
                    problem = stream_problem(EVENTS_STREAM, self._logged_seq, self._followed, now)
                    if problem is not None:
                        self._trouble = problem  # the writer stops at its next step and retries
                        await self._set(AuditState.DEGRADED, problem)
            except Exception as exc:
                self.status = replace(self.status, stream_last_seq=None)
                if self.status.state is AuditState.LEADING:
                    await self._set(AuditState.DEGRADED, f"the stream cannot be asked: {type(exc).__name__}: {exc}")
            self._write_status()

    async def _record_lag(self, now: StreamMark | None) -> None:
        """Set the ingest lag gauges: events stored and not yet indexed, and the age of the oldest."""
        if now is None:
            return
        age: float | None = 0.0
        if now.last_seq > self._logged_seq:
            try:
                oldest = await self._js.get_msg(EVENTS_STREAM, seq=max(self._logged_seq + 1, now.first_seq))
            except (NatsError, OSError, TimeoutError) as exc:  # the age stays as last measured
                log.debug("audit log %s: the oldest unindexed event could not be read: %r", self.holder, exc)
                oldest = None
            age = (datetime.now(UTC) - oldest.time).total_seconds() if oldest and oldest.time else None
        set_audit_lag(stream_last_seq=now.last_seq, indexed_seq=self._logged_seq, oldest_unindexed_age_s=age)

    async def stop(self) -> None:
        """Stop the loops, publish a last checkpoint, give the lease up, close NATS and the store."""
        # bounded: a cancellation nats-py swallows (one landing in a lease request while NATS goes
        # away) left the writer loop running and this stop waiting for it forever
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cancel_and_wait(t)
        if self._store is not None and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._publish_checkpoint()
            if self._lease is not None:
                with contextlib.suppress(Exception):
                    await self._lease.release()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await close_within(self._nc)
        if self._store is not None:
            await self._db(self._store.close)
        self._pool.shutdown(wait=True)

    async def wait_logged(self, seq: int, timeout: float = 30.0) -> None:
        """Wait until stream sequence ``seq`` is logged and covered by a published checkpoint
        (for tests and the benchmark); raises ``TimeoutError``."""
        async with asyncio.timeout(timeout):
            while self._logged_seq < seq or self._published_size < seq:
                await asyncio.sleep(0.02)


def _read_mark(path: Path) -> StreamMark | None:
    try:
        doc = json.loads(path.read_text())
        return StreamMark(doc.get("created"), int(doc["first_seq"]), int(doc["last_seq"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unknown: the sequence and tail checks still apply


def _write_mark(path: Path, mark: StreamMark) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(mark)))
    os.replace(tmp, path)


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
