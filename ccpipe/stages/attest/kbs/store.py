"""The resource store: secrets encrypted at rest with envelope encryption, in a shared backend.

Each resource is sealed with its own random 256-bit data key (AES-256-GCM, AAD = the resource
path, so a record copied to another path does not open); the data key is wrapped by the KEK
(AES-256-GCM, same AAD). The KEK comes from a :class:`KeyWrapper` chosen by :func:`load_kek`:
by default :class:`FileKek`, 32 random bytes in the replicas' ``kek`` file (:mod:`.key_dir`:
``<data_dir>/keys/kbs/kek``, created 0600 on first use, or in ``CCPIPE_KBS_KEYS_DIR``) or the file
named by ``CCPIPE_KBS_KEK_FILE``; with ``CCPIPE_KBS_PKCS11_MODULE`` set,
a non-extractable AES-256 key in a PKCS#11 token (:mod:`ccpipe.stages.attest.kbs.kek_pkcs11`,
``CKM_AES_GCM`` inside the token); nothing else changes. Backends: NATS KV bucket ``CCPIPE_KBS_RESOURCES``
(default: survives restarts, shared by replicas; see :mod:`ccpipe.stages.attest.kbs.store_nats`)
and a directory (tests, offline).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ccpipe.pipeline.keyfiles import load_or_create_private_file
from ccpipe.stages.attest.kbs.errors import InvalidResourcePath, ResourceStoreError
from ccpipe.stages.attest.kbs.key_dir import KEK_FILE, load_kbs_secret

KEK_ENV = "CCPIPE_KBS_KEK_FILE"
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_RESOURCE_BYTES = 1 << 20


def check_resource_path(path: str) -> tuple[str, str, str]:
    """``<repository>/<type>/<tag>`` split into its segments.

    Raises :class:`InvalidResourcePath` unless there are exactly three segments of
    ``[A-Za-z0-9._-]`` that are not ``.`` or ``..`` (no traversal, no empty segment).
    """
    parts = path.split("/")
    if len(parts) != 3 or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise InvalidResourcePath(f"resource path {path[:200]!r} is not <repository>/<type>/<tag> of [A-Za-z0-9._-]")
    return parts[0], parts[1], parts[2]


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys; the KEK never leaves it (a file, or a PKCS#11 token)."""

    key_id: str
    blocking: bool
    """Whether wrap/unwrap may wait on something outside this process (an HSM): then the
    store calls them from a worker thread, never on the event loop."""

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """The wrapped data key."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; raises :class:`ResourceStoreError` if it does not unwrap."""
        ...


class FileKek:
    """A 256-bit KEK in a file (0600), created on first use."""

    blocking = False  # AES-GCM in memory: microseconds

    def __init__(self, path: Path, kek: bytes | None = None) -> None:
        """Load the KEK from ``path`` or create it (``kek``: its bytes, read already from ``path``);
        raises :class:`ResourceStoreError` if unusable."""
        if kek is None:
            kek = load_or_create_private_file(path, lambda: AESGCM.generate_key(bit_length=256))
        if len(kek) != 32:
            raise ResourceStoreError(f"KEK file {path} must hold 32 raw bytes, it holds {len(kek)}")
        # group access is the deployment's to give (a Kubernetes Secret mounted 0440 with the pod's
        # fsGroup); access for every user never is
        if path.stat().st_mode & 0o007:
            raise ResourceStoreError(f"KEK file {path} is readable by others", hint=f"chmod 600 {path}")
        self._aead = AESGCM(kek)
        self.key_id = hashlib.sha256(b"ccpipe-kbs-kek\0" + kek).hexdigest()[:16]

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> FileKek:
        """``$CCPIPE_KBS_KEK_FILE`` if set, else the replicas' ``kek`` (:mod:`.key_dir`:
        ``$CCPIPE_KBS_KEYS_DIR/kek``, which must exist, or ``<data_dir>/keys/kbs/kek``)."""
        env = os.environ.get(KEK_ENV)
        return cls(Path(env)) if env else cls(*load_kbs_secret(data_dir, KEK_FILE))

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """nonce ‖ AES-256-GCM(KEK, dek, aad)."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`wrap`; raises :class:`ResourceStoreError` on a wrong KEK or tampering."""
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], aad)
        except (InvalidTag, ValueError) as exc:
            raise ResourceStoreError("a resource's data key does not unwrap with this KEK") from exc


def load_kek(data_dir: Path) -> KeyWrapper:
    """The configured KEK: a PKCS#11 token when ``CCPIPE_KBS_PKCS11_MODULE`` is set (see
    :mod:`ccpipe.stages.attest.kbs.kek_pkcs11`), else :meth:`FileKek.for_data_dir`.

    Raises :class:`ResourceStoreError` naming what is wrong with either.
    """
    # Imported here so a KBS with a key file never loads the PKCS#11 binding.
    from ccpipe.stages.attest.kbs.kek_pkcs11 import Pkcs11Config, Pkcs11Kek

    config = Pkcs11Config.from_env()
    return FileKek.for_data_dir(data_dir) if config is None else Pkcs11Kek(config)


class ResourceBackend(Protocol):
    """Where sealed records live, by resource path."""

    async def get(self, path: str) -> bytes | None:
        """The sealed record, or None."""
        ...

    async def put(self, path: str, record: bytes) -> None:
        """Store (replace) the sealed record."""
        ...

    async def delete(self, path: str) -> bool:
        """Remove it; True if it existed."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def seal(wrapper: KeyWrapper, path: str, plaintext: bytes) -> bytes:
    """The sealed record of ``plaintext`` at ``path`` (JSON: kek id, wrapped DEK, nonce, ciphertext)."""
    aad = f"ccpipe-kbs-resource\0{path}".encode()
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    record = {
        "v": 1, "kek_id": wrapper.key_id, "wrapped_dek": _b64(wrapper.wrap(dek, aad)),
        "nonce": _b64(nonce), "ciphertext": _b64(AESGCM(dek).encrypt(nonce, plaintext, aad)),
    }
    return json.dumps(record, sort_keys=True).encode()


def unseal(wrapper: KeyWrapper, path: str, record: bytes) -> bytes:
    """The plaintext of a sealed record; raises :class:`ResourceStoreError` if it does not open."""
    aad = f"ccpipe-kbs-resource\0{path}".encode()
    try:
        obj = json.loads(record)
        if obj.get("v") != 1:
            raise ValueError(f"record version {obj.get('v')!r}")
        wrapped, nonce, ct = (base64.b64decode(obj[k], validate=True) for k in ("wrapped_dek", "nonce", "ciphertext"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResourceStoreError(f"the stored record of {path} is damaged: {exc}") from exc
    if obj.get("kek_id") != wrapper.key_id:
        raise ResourceStoreError(f"the record of {path} was sealed with another KEK ({obj.get('kek_id')})")
    dek = wrapper.unwrap(wrapped, aad)
    try:
        return AESGCM(dek).decrypt(nonce, ct, aad)
    except (InvalidTag, ValueError) as exc:
        raise ResourceStoreError(f"the record of {path} does not decrypt (altered or moved)") from exc


class FileBackend:
    """Sealed records as files ``<dir>/<repository>/<type>/<tag>`` (validated paths only)."""

    def __init__(self, directory: Path) -> None:
        """Records under ``directory`` (created 0700)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir = directory

    def _file(self, path: str) -> Path:
        return self._dir.joinpath(*check_resource_path(path))

    async def get(self, path: str) -> bytes | None:
        """The record or None."""
        f = self._file(path)
        return f.read_bytes() if f.is_file() else None

    async def put(self, path: str, record: bytes) -> None:
        """Atomic replace (write a temporary file, then rename)."""
        f = self._file(path)
        f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = f.with_name(f".{f.name}.tmp")
        tmp.write_bytes(record)
        tmp.chmod(0o600)
        tmp.replace(f)

    async def delete(self, path: str) -> bool:
        """Remove the record file."""
        f = self._file(path)
        if f.is_file():
            f.unlink()
            return True
        return False


class ResourceStore:
    """Validated paths, envelope encryption, one backend."""

    def __init__(self, backend: ResourceBackend, wrapper: KeyWrapper) -> None:
        """Seal with ``wrapper`` into ``backend``."""
        self.backend = backend
        self.wrapper = wrapper

    async def set(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path``; raises :class:`InvalidResourcePath` or :class:`ResourceStoreError`."""
        check_resource_path(path)
        if len(data) > MAX_RESOURCE_BYTES:
            raise ResourceStoreError(f"resource of {len(data)} bytes exceeds {MAX_RESOURCE_BYTES}")
        await self.backend.put(path, await self._with_kek(seal, path, data))

    async def get(self, path: str) -> bytes | None:
        """The plaintext at ``path`` or None; raises :class:`ResourceStoreError` if it does not open."""
        check_resource_path(path)
        record = await self.backend.get(path)
        return None if record is None else await self._with_kek(unseal, path, record)

    async def _with_kek(self, op: Callable[[KeyWrapper, str, bytes], bytes], path: str, data: bytes) -> bytes:
        # A KEK that may block (an HSM) is used from a worker thread, never on the event loop.
        if self.wrapper.blocking:
            return await asyncio.to_thread(op, self.wrapper, path, data)
        return op(self.wrapper, path, data)

    async def delete(self, path: str) -> bool:
        """Remove ``path``; True if it existed."""
        check_resource_path(path)
        return await self.backend.delete(path)
