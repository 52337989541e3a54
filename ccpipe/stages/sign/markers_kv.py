"""The sign stage's at-most-once markers in NATS KV (bucket ``CCPIPE_SIGN_MARKERS``).

A :class:`~ccpipe.stages.sign.once.MarkerStore` over a bucket only the sign identity writes
(``ccpipe.pipeline.nats_auth``): a create with "no previous revision" is the claim, so every
replica on every host meets the same marker. The bucket is provisioned by ``ccpipe up``'s admin
identity (``ccpipe.stages.sign.handler.provision_sign_buckets``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.schemas.errors import TransientError

BUCKET = "CCPIPE_SIGN_MARKERS"


def _unreachable(what: str, exc: BaseException) -> TransientError:
    return TransientError(f"{what} in KV bucket {BUCKET} failed: {exc!r}", code="sign.marker.unreachable")


async def sign_markers_bucket(js: JetStreamContext) -> KeyValue:
    """The markers bucket, created if absent (file storage: a marker outlives every restart)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=BUCKET, description="ccpipe: the input each workload was signed for", history=1,
            storage=StorageType.FILE, replicas=cluster_replicas(js),
        ))


@dataclass(frozen=True)
class KvMarkers:
    """:class:`~ccpipe.stages.sign.once.MarkerStore` on ``CCPIPE_SIGN_MARKERS``; each call in a
    ``session`` (the sign stage's own connection)."""

    session: Callable[[], AbstractAsyncContextManager[JetStreamContext]]
    """Opens a JetStream context as the sign identity (closed when the block ends)."""

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        # created here only where the credential may (a server without authentication), as
        # the deploy buckets are; under ccpipe up the admin identity made it
        try:
            return await sign_markers_bucket(js)
        except (NatsError, NatsTimeoutError, OSError) as exc:
            raise _unreachable("opening", exc) from exc

    async def create(self, key: str, value: bytes) -> int | None:
        """Store ``value`` if ``key`` has none; its revision, or ``None`` when one exists."""
        async with self.session() as js:
            kv = await self._bucket(js)
            try:
                return int(await kv.create(key, value))
            except KeyWrongLastSequenceError:
                return None
            except (NatsError, NatsTimeoutError, OSError) as exc:
                raise _unreachable(f"claiming {key}", exc) from exc

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and revision of ``key``, if any."""
        async with self.session() as js:
            kv = await self._bucket(js)
            try:
                entry = await kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                return None
            except (NatsError, NatsTimeoutError, OSError) as exc:
                raise _unreachable(f"reading {key}", exc) from exc
            return (entry.value or b""), int(entry.revision or 0)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Replace ``key``'s value if its revision is still ``revision``; the new revision, or ``None``."""
        async with self.session() as js:
            kv = await self._bucket(js)
            try:
                return int(await kv.update(key, value, last=revision))
            except KeyWrongLastSequenceError:
                return None
            except (NatsError, NatsTimeoutError, OSError) as exc:
                raise _unreachable(f"updating {key}", exc) from exc


__all__ = ["BUCKET", "KvMarkers", "sign_markers_bucket"]
