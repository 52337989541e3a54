"""NATS KV backends: the resource store (bucket ``CCPIPE_KBS_RESOURCES``) and the nonce ledger
(``CCPIPE_KBS_NONCES``), both file storage.

Shared by every KBS replica connected to the same JetStream and kept across restarts. A KV key
is the resource path with ``/`` as ``.`` (KV key tokens); ``.`` and ``_`` inside a segment are
escaped (``_2e``, ``_5f``) so that distinct paths never share a key.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import Error as JsError
from nats.js.kv import KeyValue

from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.stages.attest.kbs.errors import AuditUnavailable, ResourceStoreError
from ccpipe.stages.attest.kbs.sessions import Session
from ccpipe.stages.attest.kbs.store import check_resource_path

BUCKET = "CCPIPE_KBS_RESOURCES"


def kv_key(path: str) -> str:
    """The KV key of a validated resource path."""
    segments = check_resource_path(path)
    return ".".join(s.replace("_", "_5f").replace(".", "_2e") for s in segments)


class NatsKvBackend:
    """Sealed records in a JetStream KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        """Use an opened bucket (see :meth:`open`)."""
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> NatsKvBackend:
        """Open the bucket, creating it (file storage, history 1, direct get) on first use.

        Direct get lets a replica read a record without the JetStream API's JSON/base64
        envelope (one release = one read); a bucket made before that is switched to it.
        """
        try:
            kv = await js.key_value(bucket)
            stream = await js.stream_info(f"KV_{bucket}")
            if not stream.config.allow_direct:
                stream.config.allow_direct = True
                await js.update_stream(stream.config)
                kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(bucket=bucket, storage=StorageType.FILE, replicas=cluster_replicas(js), history=1,
                               direct=True, description="ccpipe KBS resources (sealed with the KEK)")
            )
        return cls(kv)

    async def get(self, path: str) -> bytes | None:
        """The record or None; raises :class:`ResourceStoreError` if NATS fails."""
        try:
            entry = await self._kv.get(kv_key(path))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except (JsError, OSError, TimeoutError) as exc:
            raise ResourceStoreError(f"reading {path} from {BUCKET} failed: {exc!r}") from exc
        return entry.value

    async def put(self, path: str, record: bytes) -> None:
        """Store the record; raises :class:`ResourceStoreError` if NATS fails."""
        try:
            await self._kv.put(kv_key(path), record)
        except (JsError, OSError, TimeoutError) as exc:
            raise ResourceStoreError(f"writing {path} to {BUCKET} failed: {exc!r}") from exc

    async def delete(self, path: str) -> bool:
        """Delete the key; True if it existed."""
        existed = await self.get(path) is not None
        if existed:
            await self._kv.delete(kv_key(path))
        return existed


NONCE_BUCKET = "CCPIPE_KBS_NONCES"
NONCE_MARGIN_S = 60
"""Spent nonces are kept this long past the session timeout (clock skew between replicas)."""


class NatsNonceLedger:
    """Spent session nonces in the KV bucket ``CCPIPE_KBS_NONCES``, shared by every replica.

    Spending is an atomic create of the session id's key: exactly one replica can succeed. The
    bucket's entries expire (bucket TTL = session timeout + :data:`NONCE_MARGIN_S`), after which
    the session's cookie has expired too.
    """

    def __init__(self, kv: KeyValue) -> None:
        """Use an opened bucket (see :meth:`open`)."""
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, session_timeout_s: float,
                   bucket: str = NONCE_BUCKET) -> NatsNonceLedger:
        """Open the bucket, creating it (file storage, history 1, TTL) on first use.

        Raises :class:`ResourceStoreError` when an existing bucket forgets nonces sooner than
        sessions expire (a replay window) or NATS fails.
        """
        ttl = float(int(session_timeout_s) + NONCE_MARGIN_S)
        try:
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    KeyValueConfig(bucket=bucket, storage=StorageType.FILE, replicas=cluster_replicas(js), history=1,
                                   ttl=ttl, description="ccpipe KBS spent session nonces"))
            status = await kv.status()
        except (JsError, OSError, TimeoutError) as exc:
            raise ResourceStoreError(f"opening {bucket} failed: {exc!r}") from exc
        kept = status.ttl or 0.0  # 0: kept forever (safe, only larger)
        if kept and kept < session_timeout_s:
            raise ResourceStoreError(
                f"bucket {bucket} keeps spent nonces {kept:.0f} s but sessions live {session_timeout_s:.0f} s: "
                "a nonce could be replayed once forgotten",
                hint=f"delete the bucket (nats kv rm {bucket}) so ccpipe recreates it, or shorten the session timeout")
        return cls(kv)

    async def spend(self, session: Session) -> bool:
        """True the first time ``session.id`` is spent on any replica; raises :class:`AuditUnavailable`."""
        try:
            await self._kv.create(session.id, b"")
        except KeyWrongLastSequenceError:
            return False
        except (JsError, OSError, TimeoutError) as exc:
            raise AuditUnavailable(f"the nonce ledger {NONCE_BUCKET} is unavailable: {exc!r}") from exc
        return True
