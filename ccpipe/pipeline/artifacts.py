"""Artifacts move between stages by digest, through a NATS Object Store, never through a shared disk.

A stage that hands an OCI layout to the next one packs it into a tar (:func:`pack_layout`,
deterministic), stores it in the ``CCPIPE_ARTIFACTS`` object store under a name that holds its
digest, and publishes an :class:`ArtifactRef` — ``ccpipe-artifact:CCPIPE_ARTIFACTS/<name>@sha256:…``
— in its signed event. The consumer fetches the object, refuses it unless its SHA-256 is the one
the signed event names (so whoever can write the bucket cannot substitute another), and unpacks
it into its own data directory (:func:`unpack_layout`: regular files and directories only, no
path leaving the target).

The pushed source travels the same way, sealed to the build stage (:mod:`ccpipe.pipeline.source_bundles`).

A layout holding plaintext layers (the build output) is **sealed** before it leaves the host: a
content key wrapped in a JWE (``ECDH-ES+A256KW``) to every in-force sealing key the admin enrolled for the
consuming component (:data:`SEALED_FOR`; each sign replica has its own), so whoever operates
NATS sees only ciphertext. In a data directory without an admin key (one host, library use) the
consumer's sealing key of that directory is used.

A consumer purges the object once it is done with it (the one purge a pipeline identity may ask
for), and the bucket's max age (:data:`ARTIFACT_MAX_AGE_S`) removes what a failed workload left.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ccpipe.crypto import jose
from ccpipe.pipeline.enrolment import enrolled_keys, load_records, pinned_admin_public
from ccpipe.pipeline.keyfiles import KeyMaterialError, load_or_create_private_file
from ccpipe.pipeline.signing import enrolled_mode
from ccpipe.pipeline.store_names import ARTIFACTS
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.object_store import ObjectStore

# The NATS client is imported by the functions that talk to NATS, not here: ``ccpipe submit``
# seals the pushed source with this module and stores it through its own light client
# (ccpipe.pipeline.light_nats), and nats-py's import is most of what a submit would cost.
REF_PREFIX = "ccpipe-artifact:"
CHUNK_BYTES = 512 << 10
"""Bytes per stored message: each chunk is one acknowledged publish and one read request, so fewer
round trips (nats-py's default is 128 KiB), well below NATS's default 1 MiB message limit."""
ARTIFACT_MAX_AGE_S = 3600
"""How long an artifact is kept at most: far longer than a workload takes from build to push. Its
consumer purges it once used (:func:`forget_artifact`); this bounds what a failed workload leaves."""
SEALED_FOR = ("build", "sign")
"""The components that receive sealed (plaintext-holding) artifacts, and so have a sealing key:
the build stage (the pushed source, :mod:`ccpipe.pipeline.source_bundles`) and the sign stage (the
plain layout)."""
_REF_RE = re.compile(re.escape(REF_PREFIX)
                     + r"(?P<bucket>[A-Z0-9_]+)/(?P<name>[A-Za-z0-9._/-]+)@(?P<digest>sha256:[0-9a-f]{64})")
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


ARTIFACT_MISSING = "artifact.missing"
"""The code of an :class:`ArtifactError` for an artifact that is not (or no longer) in the store."""


class ArtifactError(InvalidInput):
    """An artifact that is missing, not the one the event names, or not a layout that unpacks safely."""

    code = "artifact.invalid"
    default_hint = "the event names an artifact by digest; only that exact object is accepted"


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A stored artifact: its object name and the SHA-256 of the stored bytes."""

    name: str
    digest: str

    def __str__(self) -> str:
        return f"{REF_PREFIX}{ARTIFACTS}/{self.name}@{self.digest}"

    @classmethod
    def parse(cls, text: str) -> ArtifactRef | None:
        """The reference in ``text``, or None when it is no artifact reference (a local path)."""
        if not text.startswith(REF_PREFIX):
            return None
        m = _REF_RE.fullmatch(text)
        if m is None or m["bucket"] != ARTIFACTS:
            raise ArtifactError(f"{text[:200]!r} is not a valid artifact reference")
        return cls(m["name"], m["digest"])


# --- packing --------------------------------------------------------------------------------------


def pack_layout(root: Path) -> bytes:
    """A tar of the directory ``root`` (files and directories, sorted, owner 0, time 0): the same
    tree always gives the same bytes."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise ArtifactError(f"{path} is neither a regular file nor a directory: layouts hold only those")
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
    return buf.getvalue()


def unpack_layout(data: bytes, into: Path) -> Path:
    """Unpack a :func:`pack_layout` tar into ``into`` (replacing what was there); returns ``into``.

    Refuses, with :class:`ArtifactError` and nothing left behind, any member that is not a regular
    file or directory or whose path is absolute or leaves the target.
    """
    import tarfile

    staging = into.with_name(f".{into.name}.{os.getpid()}.unpack")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                    raise ArtifactError(f"artifact member {member.name!r} is not a plain file or directory "
                                        "inside the layout")
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, ValueError, OSError, ArtifactError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"the artifact is not a readable layout archive: {exc}") from exc
    shutil.rmtree(into, ignore_errors=True)
    into.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(into)
    return into


# --- sealing --------------------------------------------------------------------------------------


def sealing_key_path(data_dir: Path, component: str) -> Path:
    """A component's sealing key (P-256, PEM, 0600): what sealed artifacts are encrypted to."""
    return data_dir / "keys" / "sealing" / f"{component}.pem"


def load_or_create_sealing_key(data_dir: Path, component: str) -> ec.EllipticCurvePrivateKey:
    """The component's sealing key in ``data_dir``, made on first use."""
    from cryptography.hazmat.primitives.serialization import (  # here: ``ccpipe submit`` never loads a key here
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    path = sealing_key_path(data_dir, component)

    def make() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                      NoEncryption())

    try:
        key = load_pem_private_key(load_or_create_private_file(path, make), password=None)
    except (OSError, ValueError) as exc:
        raise KeyMaterialError(f"the sealing key {path} cannot be used: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(f"the sealing key {path} is not an EC key")
    return key


def sealing_public_jwk(data_dir: Path, component: str) -> dict[str, str]:
    """The public JWK of the component's sealing key (what the admin enrols beside its event key)."""
    return jose.public_jwk(load_or_create_sealing_key(data_dir, component))


SEALED_MAGIC = b"ccpipe-sealed-v1\n"


def seal(data: bytes, recipients: list[jose.PublicKey]) -> bytes:
    """``data`` encrypted for every recipient.

    A fresh AES-256 content key encrypts ``data`` (AES-GCM); the key itself travels as a general
    JSON JWE (``ECDH-ES+A256KW`` per recipient), which is also the GCM additional data, so the
    wrapped key and the content cannot be recombined. Layout: magic, 4-byte big-endian JWE
    length, the JWE, the 12-byte nonce, ciphertext ‖ tag. (JOSE libraries cap a JWE's payload
    far below a layout's size, hence the key wrap.)
    """
    content_key = AESGCM.generate_key(bit_length=256)
    # EC keys (every sealing key is P-256) without joserfc: ``ccpipe submit`` seals on every push
    ec_only = [key for key in recipients if isinstance(key, ec.EllipticCurvePublicKey)]
    document = (jose.encrypt_general_ec(content_key, ec_only) if len(ec_only) == len(recipients)
                else jose.encrypt_general(content_key, recipients))
    wrapped = json.dumps(document, separators=(",", ":")).encode()
    nonce = os.urandom(12)
    return (SEALED_MAGIC + len(wrapped).to_bytes(4, "big") + wrapped + nonce
            + AESGCM(content_key).encrypt(nonce, data, wrapped))


def unseal(blob: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The plaintext of a sealed artifact; raises :class:`ArtifactError` if it is not sealed to ``key``
    or was altered."""
    hint = ("its sealing key must be enrolled ('ccpipe admin enrol COMPONENT KEY,SEALING_KEY') before the "
            "producing stage seals to it")
    if not blob.startswith(SEALED_MAGIC) or len(blob) < len(SEALED_MAGIC) + 4:
        raise ArtifactError("the artifact is not sealed (ccpipe-sealed-v1)", hint=hint)
    at = len(SEALED_MAGIC)
    size = int.from_bytes(blob[at:at + 4], "big")
    wrapped, rest = blob[at + 4:at + 4 + size], blob[at + 4 + size:]
    try:
        content_key = jose.decrypt(json.loads(wrapped), key, algorithms=(jose.EC_ALG, jose.CONTENT_ENC))
        return AESGCM(content_key).decrypt(rest[:12], rest[12:], wrapped)
    except (ValueError, jose.JoseInvalid, InvalidTag) as exc:
        raise ArtifactError(f"the sealed artifact does not open with this host's sealing key: {exc or 'altered'}",
                            hint=hint) from exc


# --- the object store -----------------------------------------------------------------------------


def _unreachable(what: str, exc: BaseException) -> TransientError:
    return TransientError(f"{what} the artifact store {ARTIFACTS} failed: {exc!r}", code="artifact.unreachable")


async def artifacts_bucket(js: JetStreamContext) -> None:
    """Create ``CCPIPE_ARTIFACTS`` if absent (the admin's provisioning step)."""
    from nats.js.api import ObjectStoreConfig, StorageType
    from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

    from ccpipe.pipeline.bus import cluster_replicas  # here: the bus module loads the models (see store_names)

    try:
        await js.object_store(ARTIFACTS)
    except (NotFoundError, ObjectNotFoundError, BucketNotFoundError):
        await js.create_object_store(ARTIFACTS, ObjectStoreConfig(
            description="ccpipe: layouts handed from one stage to the next, by digest (sealed where plaintext)",
            ttl=ARTIFACT_MAX_AGE_S, storage=StorageType.FILE, replicas=cluster_replicas(js)))


async def _opened(js: JetStreamContext) -> ObjectStore:
    # created on first use only where the credential may (a server without authentication, as in
    # tests); on a secured server the admin provisions it and a component only opens it
    from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

    try:
        return await js.object_store(ARTIFACTS)
    except (NotFoundError, ObjectNotFoundError, BucketNotFoundError):
        await artifacts_bucket(js)
        return await js.object_store(ARTIFACTS)


def artifact_ref(workload_id: str, kind: str, data: bytes) -> ArtifactRef:
    """The reference ``data`` is stored under: ``<workload>/<kind>/<its sha256>``.

    Raises :class:`InvalidInput` for a workload id or kind that cannot be part of an object name.
    """
    if not (_NAME_PART.fullmatch(workload_id) and _NAME_PART.fullmatch(kind)):
        raise InvalidInput(f"artifact name parts {workload_id!r}/{kind!r} are not allowed", code="artifact.name")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return ArtifactRef(f"{workload_id}/{kind}/{digest.removeprefix('sha256:')}", digest)


async def put_artifact(js: JetStreamContext, workload_id: str, kind: str, data: bytes) -> ArtifactRef:
    """Store ``data`` as ``<workload>/<kind>/<its sha256>``; returns its reference.

    The name holds the digest, so a retry stores a new object instead of replacing one (which
    would need a purge no pipeline identity may do).
    """
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import ObjectMeta, ObjectMetaOptions

    from ccpipe.pipeline.bus import settled  # here: the bus module loads the models (see store_names)

    ref = artifact_ref(workload_id, kind, data)

    async def put() -> None:
        store = await _opened(js)
        await store.put(ref.name, data, meta=ObjectMeta(name=ref.name,
                                                        options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)))

    try:
        # retried through a leader election of the bucket (a lost node): a repeat stores the same
        # name again, whose metadata rolls up; chunks of an attempt cut short expire with the bucket
        await settled(put, f"writing {ref.name} to the artifact store {ARTIFACTS}", js)
    except TransientError:
        raise
    except (NatsError, NatsTimeoutError, OSError) as exc:
        raise _unreachable("writing to", exc) from exc
    return ref


ARTIFACT_READ_TIMEOUT_S = 60.0
"""How long one artifact may take to read before the attempt counts as failed (and is retried)."""


async def read_stored(js: JetStreamContext, name: str) -> bytes:
    """The bytes stored under ``name``, read chunk by chunk by stream sequence (no consumer).

    Every read is one request with its own timeout, so a leader lost mid-read fails the attempt
    (to be retried) instead of waiting forever on a consumer that went with it.
    """
    store = await _opened(js)
    info = await store.get_info(name)
    data = bytearray()
    subject, seq = f"$O.{ARTIFACTS}.C.{info.nuid}", 1
    while len(data) < (info.size or 0):
        msg = await js.get_msg(f"OBJ_{ARTIFACTS}", seq=seq, subject=subject, next=True)
        if msg.seq is None:
            break
        data += msg.data or b""
        seq = msg.seq + 1
    return bytes(data)


async def get_artifact(js: JetStreamContext, ref: ArtifactRef) -> bytes:
    """The bytes of ``ref``, checked against its digest.

    Raises :class:`ArtifactError` when it is gone or differs, :class:`TransientError` when NATS
    does not answer within :data:`ARTIFACT_READ_TIMEOUT_S`.
    """
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import NotFoundError, ObjectNotFoundError

    try:
        import asyncio  # here, not at module level: ``ccpipe submit`` loads this module without it

        data = await asyncio.wait_for(read_stored(js, ref.name), ARTIFACT_READ_TIMEOUT_S)
    except (ObjectNotFoundError, NotFoundError) as exc:
        raise ArtifactError(f"artifact {ref} is not in {ARTIFACTS} (expired after "
                            f"{ARTIFACT_MAX_AGE_S // 3600} h, or never stored)", code=ARTIFACT_MISSING) from exc
    except (NatsError, NatsTimeoutError, OSError, TimeoutError) as exc:
        raise _unreachable("reading from", exc) from exc
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != ref.digest:
        raise ArtifactError(f"artifact {ref.name} holds {got}, not the {ref.digest} its event names",
                            code="artifact.digest")
    return data


async def forget_artifact(js: JetStreamContext, ref: ArtifactRef) -> None:
    """Purge a consumed artifact's chunks and metadata (its consumer's last step); a failure is only
    logged, since the bucket's max age removes it anyway."""
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import NotFoundError, ObjectNotFoundError

    name_token = base64.urlsafe_b64encode(ref.name.encode()).decode()
    try:
        store = await _opened(js)
        info = await store.get_info(ref.name)
        for subject in (f"$O.{ARTIFACTS}.C.{info.nuid}", f"$O.{ARTIFACTS}.M.{name_token}"):
            await js.purge_stream(f"OBJ_{ARTIFACTS}", subject=subject)
    except (ObjectNotFoundError, NotFoundError):
        return
    except (NatsError, NatsTimeoutError, OSError) as exc:
        import logging  # here: ``ccpipe submit`` loads this module, and logging only ever for this line

        logging.getLogger("ccpipe.artifacts").warning("artifact %s not purged (it expires after %d h): %r",
                                                      ref.name, ARTIFACT_MAX_AGE_S // 3600, exc)


def _packed(layout: Path, seal_to: list[jose.PublicKey] | None) -> bytes:
    data = pack_layout(layout)
    return seal(data, seal_to) if seal_to else data


async def store_layout(js: JetStreamContext, workload_id: str, kind: str, layout: Path,
                       seal_to: list[jose.PublicKey] | None = None) -> ArtifactRef:
    """Pack ``layout``, seal it to ``seal_to`` when given, and store it; returns the reference.

    Packing and sealing run in a worker thread (a layout is megabytes)."""
    import asyncio  # here, not at module level: ``ccpipe submit`` loads this module without it

    return await put_artifact(js, workload_id, kind, await asyncio.to_thread(_packed, layout, seal_to))


def _unpacked(data: bytes, into: Path, unseal_with: ec.EllipticCurvePrivateKey | None) -> Path:
    return unpack_layout(unseal(data, unseal_with) if unseal_with is not None else data, into)


async def fetch_layout(js: JetStreamContext, ref: ArtifactRef, into: Path,
                       unseal_with: ec.EllipticCurvePrivateKey | None = None) -> Path:
    """Fetch ``ref``, check it, unseal it with ``unseal_with`` when given, unpack it into ``into``."""
    data = await get_artifact(js, ref)
    import asyncio  # here, not at module level: ``ccpipe submit`` loads this module without it

    return await asyncio.to_thread(_unpacked, data, into, unseal_with)


def layout_ref(data_dir: Path, layout: str) -> ArtifactRef | None:
    """The artifact an event's ``layout`` names, or None for a plain path, which is accepted only in
    a data directory without an admin key (the stages' pure cores in library use, on one host).

    Raises :class:`ArtifactError` for a path where components are enrolled: there a layout travels
    only by digest, and a path would make a consumer read whatever the signer pointed it at.
    """
    ref = ArtifactRef.parse(layout)
    if ref is None and enrolled_mode(data_dir):
        raise ArtifactError(f"the event names the local path {layout[:200]!r} as its layout; enrolled "
                            "components hand layouts on only by digest (ccpipe-artifact:…)", code="artifact.path")
    return ref


def sealing_recipients(data_dir: Path, component: str, records: list[bytes] | None = None) -> list[jose.PublicKey]:
    """Every key an artifact for ``component`` is sealed to: the sealing keys of its in-force
    enrolments (in ``records`` when given, the stored records just read from the bucket; else as
    this host's enrolment mirror last kept them), or, in a data directory without an admin key,
    that component's sealing key there. Raises :class:`ConfigurationError` if there is none."""
    admin_public = pinned_admin_public(data_dir)
    if admin_public is None:
        return [load_or_create_sealing_key(data_dir, component).public_key()]
    if records is None:
        records = load_records(data_dir) or []
    jwks = enrolled_keys(records, admin_public).sealing.get(component, [])
    if not jwks:
        raise _no_sealing_key(component)
    return [jose.import_public_jwk(jwk, curves=("P-256",)) for jwk in jwks]


def _no_sealing_key(component: str) -> ConfigurationError:
    return ConfigurationError(
        f"no sealing key of the {component} stage is enrolled: its input cannot be sealed to it",
        hint=f"enrol it with the key 'ccpipe admin public-key {component}' prints (KEY,SEALING_KEY)",
        code="artifact.recipient.missing")
