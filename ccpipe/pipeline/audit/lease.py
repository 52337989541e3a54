"""One writer at a time: the audit log's lease in a NATS KV bucket.

Several ``ccpipe audit serve`` processes may follow one stream; only the holder of the key
:data:`LEASE_KEY` in bucket :data:`LEASE_BUCKET` reads the stream, writes the store and signs
checkpoints. The others are hot standbys: they try to take the key every fraction of the TTL,
and the bucket's TTL (``max_age``) removes a key its holder stopped renewing, so a standby
takes over within one TTL of the holder dying. Every change is a compare-and-set on the key's
revision, so two processes never both believe they hold it.

A holder that cannot renew (NATS away) stops writing before its key can expire
(:meth:`WriterLease.held`), so a standby that takes the key never writes beside it.

Imports nats-py only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ccpipe.pipeline.bus import cluster_replicas

LEASE_BUCKET = "CCPIPE_AUDIT_LEASE"
"""KV bucket of the audit log's writer lease."""
LEASE_KEY = "writer"
"""The one key of :data:`LEASE_BUCKET`: its value names the holder."""
LEASE_TTL_S = 6.0
"""How long a key lives unrenewed: a standby takes over at most this long after the holder died."""
SAFETY = 0.7
"""A holder writes only within this fraction of the TTL since its last renewal, so it has
stopped before its key can expire and be taken (clocks of processes differ; timers are late)."""


async def lease_bucket(js: JetStreamContext, ttl_s: float = LEASE_TTL_S) -> KeyValue:
    """The lease bucket, created with ``ttl_s`` if absent (an existing bucket keeps its TTL)."""
    try:
        return await js.key_value(LEASE_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=LEASE_BUCKET, description="ccpipe: the audit log's writer lease (one writer at a time)",
            history=1, ttl=ttl_s, storage=StorageType.FILE, replicas=cluster_replicas(js)))


@dataclass
class WriterLease:
    """This process's claim on :data:`LEASE_KEY`; ``holder`` names it (host, pid, start)."""

    kv: KeyValue
    holder: str
    ttl_s: float = LEASE_TTL_S
    _revision: int | None = None
    _renewed_at: float = 0.0

    def held(self) -> bool:
        """True while this process may write: it holds the key and renewed it recently enough."""
        return self._revision is not None and time.monotonic() - self._renewed_at < self.ttl_s * SAFETY

    async def acquire(self) -> bool:
        """Take the key if nobody holds it; True if this process now holds it."""
        started = time.monotonic()
        try:
            self._revision = await self.kv.create(LEASE_KEY, self.holder.encode())
        except KeyWrongLastSequenceError:
            self._revision = None
            return False
        self._renewed_at = started
        return True

    async def renew(self) -> bool:
        """Extend the lease; False (and no longer held) if someone else took the key meanwhile.

        Raises what NATS raises when it does not answer: the lease then lapses by itself.
        """
        if self._revision is None:
            return False
        started = time.monotonic()
        try:
            self._revision = await self.kv.update(LEASE_KEY, self.holder.encode(), last=self._revision)
        except KeyWrongLastSequenceError:
            self._revision = None
            return False
        self._renewed_at = started
        return True

    async def current_holder(self) -> str | None:
        """Who holds the key now, if anyone (for messages)."""
        try:
            entry = await self.kv.get(LEASE_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return entry.value.decode(errors="replace") if entry.value else None

    async def release(self) -> None:
        """Give the key up at once (a clean stop), so a standby need not wait for the TTL."""
        if self._revision is None:
            return
        revision, self._revision = self._revision, None
        await self.kv.delete(LEASE_KEY, last=revision)
