"""Enrolments on NATS: the ``CCPIPE_ENROLMENTS`` bucket, and the mirror that keeps a host's keyring.

The admin writes one admin-signed record per key (:mod:`ccpipe.pipeline.enrolment`); only the
admin identity may publish to the bucket (``ccpipe.pipeline.nats_auth``), every identity may
read it. Each process that checks events runs an :class:`EnrolmentMirror`: it reads the
bucket's records, keeps those the pinned admin key signed, and makes them the component keys
of the data directory's keyring file, which every reader there uses
(:func:`ccpipe.pipeline.event_trust.trusted_keys`). The mirror polls the bucket's last sequence
(one small request) and is asked at once when a consumer meets an unknown key.

Records are read by stream sequence (``STREAM.MSG.GET`` with next-by-subject), which needs no
consumer and so no permission beyond reading the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RawStreamMsg, StorageType, StreamInfo
from nats.js.errors import BucketNotFoundError, NotFoundError

from ccpipe.crypto import jose
from ccpipe.evidence.enrolled_roots import (
    MAX_TOTAL_BYTES,
    decode_public_roots,
    export_public_roots,
    replace_vouched_roots,
)
from ccpipe.pipeline.artifacts import SEALED_FOR, sealing_public_jwk
from ccpipe.pipeline.bus import settled
from ccpipe.pipeline.enrolment import (
    ROOTS_FROM,
    EnrolmentRecord,
    decode_public,
    encode_public,
    enrolled_keys,
    init_admin,
    load_admin_key,
    new_record,
    open_records,
    pin_admin_public,
    pinned_admin_public,
    save_records,
    sign_record,
)
from ccpipe.pipeline.event_signature import key_id_for, load_or_create_component_key
from ccpipe.pipeline.signing import ComponentKeyring, RegisteredKey, locked_keyring
from ccpipe.pipeline.store_names import ENROLMENTS
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError

if TYPE_CHECKING:
    from ccpipe.schemas.config import Settings

log = logging.getLogger("ccpipe.enrolment")

ENROLMENT_SUBJECTS = f"$KV.{ENROLMENTS}.>"
MIRROR_INTERVAL_S = 2.0
"""How often a mirror looks for new enrolments and revocations (besides when asked)."""


async def enrolments_bucket(js: JetStreamContext) -> None:
    """Create ``CCPIPE_ENROLMENTS`` if absent (the admin's provisioning step): file storage, one
    revision per key (a revocation replaces its enrolment), replicated like every bucket."""
    # imported here, as in the functions below that connect: the bus module loads the models, and
    # ``ccpipe submit`` reads the enrolments (read_records) without them
    from ccpipe.pipeline.bus import cluster_replicas

    try:
        await js.key_value(ENROLMENTS)
    except BucketNotFoundError:
        await js.create_key_value(KeyValueConfig(
            bucket=ENROLMENTS, description="ccpipe: component event keys enrolled by the installation's admin",
            history=1, storage=StorageType.FILE, replicas=cluster_replicas(js)))


async def publish_record(js: JetStreamContext, record: EnrolmentRecord, blob: bytes) -> int:
    """Store a signed record under its key; returns the bucket revision."""
    kv = await js.key_value(ENROLMENTS)
    return int(await kv.put(record.kv_key, blob))


async def read_records(js: JetStreamContext, info: StreamInfo | None = None) -> tuple[int, list[bytes]]:
    """(the bucket's last sequence, the stored record of every key), without a consumer; ``info``:
    the bucket stream's info when the caller has just asked for it.

    Raises :class:`TransientError` when NATS does not answer, :class:`ConfigurationError` when
    the bucket does not exist.
    """
    stream = f"KV_{ENROLMENTS}"
    try:
        what = f"reading the enrolments from {ENROLMENTS}"

        async def message_at(at: int) -> RawStreamMsg:
            return await js.get_msg(stream, seq=at, subject=ENROLMENT_SUBJECTS, next=True)

        async def stream_info() -> StreamInfo:
            return await js.stream_info(stream)

        # retried through a leader election of the bucket (a lost node), as every read here is
        if info is None:
            info = await settled(stream_info, what, js)
        last, seq = info.state.last_seq, info.state.first_seq
        latest: dict[str, bytes] = {}
        while info.state.messages and seq <= last:
            try:
                msg = await settled(functools.partial(message_at, seq), what, js)
            except NotFoundError:
                break
            if msg.seq is None or msg.subject is None:
                break
            key = msg.subject.removeprefix(f"$KV.{ENROLMENTS}.")
            if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                latest.pop(key, None)
            else:
                latest[key] = msg.data or b""
            seq = msg.seq + 1
    except NotFoundError as exc:
        raise ConfigurationError(f"the enrolment bucket {ENROLMENTS} does not exist",
                                 hint="the admin provisions it: 'ccpipe admin init' (or 'ccpipe up')",
                                 code="enrolment.bucket.missing") from exc
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise TransientError(f"reading the enrolments from {ENROLMENTS} failed: {exc!r}",
                             code="enrolment.unreachable") from exc
    return last, list(latest.values())


def write_enrolled_keyring(data_dir: Path, keys: list[RegisteredKey]) -> bool:
    """Make ``keys`` the component keys of ``data_dir``'s keyring file (other members kept); True if they changed."""
    with locked_keyring(data_dir) as path:
        ring = ComponentKeyring.load(path) if path.exists() else ComponentKeyring()
        before = ring.to_json()
        ring.replace_components(keys)
        if ring.to_json() == before and path.exists():
            return False
        ring.save(path)
        return True


class EnrolmentMirror:
    """Keeps ``data_dir``'s trusted component keys equal to the admin-signed enrolments on NATS."""

    def __init__(self, js: JetStreamContext, data_dir: Path, admin_public: bytes) -> None:
        self.js, self.data_dir, self.admin_public = js, data_dir, admin_public
        self._seen: int | None = None
        self._lock = asyncio.Lock()
        self.ignored: list[str] = []

    async def refresh(self) -> bool:
        """Read the bucket if it changed since the last read; True if the trusted keys changed."""
        async with self._lock:
            try:
                info = await self.js.stream_info(f"KV_{ENROLMENTS}")
            except (NatsError, NatsTimeoutError, OSError) as exc:
                log.warning("enrolments: cannot reach %s: %r", ENROLMENTS, exc)
                return False
            if info.state.last_seq == self._seen:
                return False
            last, blobs = await read_records(self.js, info)
            found = enrolled_keys(blobs, self.admin_public)
            for why in set(found.ignored) - set(self.ignored):
                log.warning("enrolments: ignored a record: %s", why)
            self.ignored = found.ignored
            save_records(self.data_dir, blobs)
            changed = write_enrolled_keyring(self.data_dir, found.keys)
            # the records were checked when opened; decoding again cannot fail for a signed one
            replace_vouched_roots(self.data_dir, {
                name: decode_public_roots(files, name) for name, files in found.emulated_roots.items()})
            self._seen = last
            return changed

    async def run(self, interval: float = MIRROR_INTERVAL_S) -> None:
        """Refresh every ``interval`` seconds until cancelled (failures are logged and retried)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except (TransientError, ConfigurationError) as exc:
                log.warning("enrolments: %s", exc.one_line())


def configured_admin_key(settings: Settings) -> bytes | None:
    """The admin public key this host trusts: ``CCPIPE_ADMIN_KEY`` (pinned in the data directory on
    first use) or the one pinned there already; None where there is neither (a bare data directory)."""
    if settings.admin_key:
        public = decode_public(settings.admin_key, "CCPIPE_ADMIN_KEY")
        pin_admin_public(settings.data_dir, public)
        return public
    return pinned_admin_public(settings.data_dir)


def require_admin_key(settings: Settings) -> bytes:
    """:func:`configured_admin_key`; raises :class:`ConfigurationError` if there is none."""
    pinned = configured_admin_key(settings)
    if pinned is None:
        raise ConfigurationError(
            "no admin key is pinned: this host cannot tell enrolled component keys from planted ones",
            hint="set CCPIPE_ADMIN_KEY to the public key 'ccpipe admin init' printed on the administrator's machine",
            code="enrolment.admin.missing")
    return pinned


async def refresh_enrolments_once(settings: Settings, js: JetStreamContext) -> None:
    """Bring the data directory's trusted keys up to date once, for a one-shot reader (``ccpipe events``,
    ``status``, ``k8s manifest``) that runs no mirror; nothing without an admin key, and a failure
    only logged (the keys as last mirrored are used)."""
    admin_public = configured_admin_key(settings)
    if admin_public is None:
        return
    try:
        await EnrolmentMirror(js, settings.data_dir, admin_public).refresh()
    except TransientError as exc:
        log.warning("enrolments: %s", exc.one_line())


@asynccontextmanager
async def mirrored_enrolments(settings: Settings, nats_url: str,
                              identity: str) -> AsyncIterator[EnrolmentMirror | None]:
    """Run an :class:`EnrolmentMirror` for ``settings.data_dir`` (connected as ``identity``) while the block runs.

    The keyring is current when the block starts; consumers of the data directory's keys may ask
    the mirror for a refresh when they meet an unknown key. Without any admin key (neither
    ``CCPIPE_ADMIN_KEY`` nor one pinned in the data directory) nothing runs and the block gets
    None: a bare data directory shared on one host keeps the single-host rule
    (:func:`ccpipe.pipeline.signing.component_key`). ``ccpipe serve`` never runs so
    (:func:`check_own_enrolment` requires the admin key).
    """
    from ccpipe.pipeline.bus import connect_as
    from ccpipe.pipeline.event_trust import register_key_refresher

    admin_public = configured_admin_key(settings)
    if admin_public is None:
        yield None
        return
    nc = await connect_as(settings, nats_url, identity, name=f"ccpipe-{identity}-enrolments")
    mirror = EnrolmentMirror(nc.jetstream(), settings.data_dir, admin_public)
    withdraw = register_key_refresher(settings.data_dir, mirror.refresh)
    task: asyncio.Task[None] | None = None
    try:
        await mirror.refresh()
        task = asyncio.create_task(mirror.run(), name="ccpipe-enrolment-mirror")
        yield mirror
    finally:
        withdraw()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await nc.close()


def host_keys(data_dir: Path, component: str) -> tuple[bytes, dict[str, str] | None]:
    """This host's public keys of ``component`` to enrol: its event key, and its sealing key (a
    public JWK) for a component that receives sealed artifacts. Both are made on first use."""
    public = load_or_create_component_key(data_dir, component).public_key
    return public, sealing_public_jwk(data_dir, component) if component in SEALED_FOR else None


ROOTS_PREFIX = "roots="
"""Marks the part of an enrolment token that carries the host's public emulated roots."""


@dataclass(frozen=True)
class EnrolmentToken:
    """What a host asks the admin to vouch for: its event key, its sealing key, its emulated roots."""

    public_key: bytes
    sealing_key: dict[str, str] | None = None
    emulated_roots: dict[str, str] | None = None


def enrolment_token(data_dir: Path, component: str, emulated_roots: dict[str, str] | None = None) -> str:
    """What ``ccpipe admin public-key COMPONENT`` prints on the component's host, for the admin to enrol:
    the event key (base64); where there is one ``,`` and the sealing key (base64url of the JWK); and
    for an emulating build runner or runner node ``,roots=`` and its public emulated roots
    (base64url of zlib-compressed JSON)."""
    public, sealing = host_keys(data_dir, component)
    token = encode_public(public)
    if sealing is not None:
        token += "," + jose.b64url(json.dumps(sealing, sort_keys=True, separators=(",", ":")).encode())
    if emulated_roots:
        packed = zlib.compress(json.dumps(emulated_roots, sort_keys=True, separators=(",", ":")).encode(), 9)
        token += "," + ROOTS_PREFIX + jose.b64url(packed)
    return token


def parse_enrolment_token(token: str, component: str) -> EnrolmentToken:
    """The parts of an :func:`enrolment_token`; raises :class:`InvalidInput` naming the bad part."""
    event_part, *rest = token.strip().split(",")
    public = decode_public(event_part, "the event key")
    sealing: dict[str, str] | None = None
    roots: dict[str, str] | None = None
    for part in rest:
        if part.startswith(ROOTS_PREFIX):
            roots = _decode_roots_part(part.removeprefix(ROOTS_PREFIX), component)
            continue
        try:
            sealing = json.loads(jose.b64url_decode(part))
        except (ValueError, jose.JoseInvalid) as exc:
            raise InvalidInput(f"the sealing key of {component} is not base64url JSON",
                               code="enrolment.key.invalid") from exc
    if sealing is None and component in SEALED_FOR:
        raise InvalidInput(f"{component} receives sealed artifacts: its enrolment needs KEY,SEALING_KEY",
                           hint=f"copy the whole line 'ccpipe admin public-key {component}' printed",
                           code="enrolment.key.invalid")
    return EnrolmentToken(public, sealing, roots)


def _decode_roots_part(text: str, component: str) -> dict[str, str]:
    try:
        # the bound keeps a crafted token from inflating without limit
        inflater = zlib.decompressobj()
        raw = inflater.decompress(jose.b64url_decode(text), 2 * MAX_TOTAL_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("too large")
        files = json.loads(raw)
    except (ValueError, zlib.error, jose.JoseInvalid) as exc:
        raise InvalidInput(f"the emulated roots of {component} are not what 'ccpipe admin public-key' prints: {exc}",
                           code="enrolment.roots.invalid") from exc
    decode_public_roots(files, f"the emulated roots of {component}")
    return {str(k): str(v) for k, v in files.items()}


async def enrol(js: JetStreamContext, data_dir: Path, component: str, public_key: bytes,
                sealing_key: dict[str, str] | None = None,
                emulated_roots: dict[str, str] | None = None) -> EnrolmentRecord:
    """Sign an enrolment of ``public_key`` (and ``sealing_key``, ``emulated_roots``) for ``component``
    with the admin key in ``data_dir`` and store it."""
    admin = load_admin_key(data_dir)
    record = new_record(component, public_key, admin.public_key().public_bytes_raw(), sealing_key, emulated_roots)
    await publish_record(js, record, sign_record(record, admin))
    return record


async def revoke(js: JetStreamContext, data_dir: Path, component: str, key_id: str) -> EnrolmentRecord:
    """Revoke an enrolled key from now on; raises :class:`ConfigurationError` if it is not enrolled."""
    admin = load_admin_key(data_dir)
    _, blobs = await read_records(js)
    records, _ = open_records(blobs, admin.public_key().public_bytes_raw())
    found = [r for r in records if r.component == component and r.key_id == key_id]
    if not found:
        raise ConfigurationError(f"{component} has no enrolled key {key_id}",
                                 hint="'ccpipe admin enrolments' lists the enrolled keys", code="enrolment.unknown")
    record = found[0] if found[0].revoked_at is not None else found[0].revoked()
    await publish_record(js, record, sign_record(record, admin))
    return record


async def list_enrolments(js: JetStreamContext, admin_public: bytes) -> tuple[list[EnrolmentRecord], list[str]]:
    """Every record the admin key signed, and why the others were ignored."""
    _, blobs = await read_records(js)
    records, ignored = open_records(blobs, admin_public)
    return sorted(records, key=lambda r: (r.component, r.enrolled_at)), ignored


EMBEDDED_SIGNERS = ("submit", "build", "attest", "sign", "push", "schedule", "kbs", "runner")
"""Every component that signs events, all enrolled by ``ccpipe up`` in its one data directory."""


async def check_own_enrolment(settings: Settings, nats_url: str, identity: str, component: str) -> None:
    """Refuse to serve ``component`` until the admin enrolled its key: its events would all be refused.

    Raises :class:`ConfigurationError` naming the command the admin runs (with this host's public key).
    """
    if component not in EMBEDDED_SIGNERS:
        return  # signs no events (the audit log signs checkpoints with its own log key)
    from ccpipe.pipeline.bus import connect_as

    admin_public = require_admin_key(settings)
    public, sealing = host_keys(settings.data_dir, component)
    nc = await connect_as(settings, nats_url, identity, name=f"ccpipe-{identity}-enrolment-check")
    try:
        _, blobs = await read_records(nc.jetstream())
    finally:
        await nc.close()
    found = enrolled_keys(blobs, admin_public)
    mine = [k for k in found.keys if k.key_id == key_id_for(public)]
    problem = ("revoked" if mine and mine[0].revoked_at is not None else
               "not enrolled" if not mine or mine[0].component != component else
               "enrolled without this host's sealing key" if sealing is not None
               and sealing not in found.sealing.get(component, []) else
               "enrolled with other emulated TEE roots than this host's"
               if found.emulated_roots.get(f"{component}-{key_id_for(public)}")
               != own_emulated_roots(settings.data_dir, component) else None)
    if problem is not None:
        raise ConfigurationError(
            f"this host's {component} key {key_id_for(public)} is {problem}: "
            + ("what is sealed to it could not be opened" if "sealing" in problem
               else "the verifiers on other hosts would refuse its evidence" if "roots" in problem
               else "every event it signed would be refused"),
            hint=f"on the administrator's machine run: ccpipe admin enrol {component} "
                 f"{enrolment_token(settings.data_dir, component, own_emulated_roots(settings.data_dir, component))}",
            code="enrolment.missing")


def own_emulated_roots(data_dir: Path, component: str) -> dict[str, str] | None:
    """The public emulated roots this host already made, for a component whose evidence is verified elsewhere."""
    return (export_public_roots(data_dir) or None) if component in ROOTS_FROM else None


async def enrol_embedded(js: JetStreamContext, data_dir: Path) -> None:
    """What ``ccpipe up`` does in its single data directory: make the admin key if there is none,
    and enrol each signing component's key that is not enrolled yet (idempotent)."""
    admin_public = pinned_admin_public(data_dir) or init_admin(data_dir)
    _, blobs = await read_records(js)
    found = enrolled_keys(blobs, admin_public)
    enrolled = {k.key_id for k in found.keys if k.revoked_at is None}
    for component in EMBEDDED_SIGNERS:
        public, sealing = host_keys(data_dir, component)
        stale_sealing = sealing is not None and sealing not in found.sealing.get(component, [])
        if key_id_for(public) not in enrolled or stale_sealing:
            await enrol(js, data_dir, component, public, sealing)
