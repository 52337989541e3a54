"""ocicrypt's ``AES_256_CTR_HMAC_SHA256`` layer cipher, streamed in fixed-size chunks.

Wire facts (containers/ocicrypt ``blockcipher``, checked against skopeo 1.9.3):

* key: 32 random bytes, fresh for every layer; IV: 16 random bytes used as the whole initial
  AES-CTR counter block (128-bit big-endian counter);
* MAC: HMAC-SHA256 keyed with the *same* key, over the **ciphertext** (encrypt-then-MAC),
  checked at end of stream on decryption;
* ciphertext length = plaintext length; the blob's compression is kept as is;
* public options go to the layer annotation ``org.opencontainers.image.enc.pubopts`` as
  base64(JSON ``{"cipher","hmac","cipheroptions"}``); private options
  ``{"symkey","digest","cipheroptions":{"nonce"}}`` are what each recipient wraps.

Memory stays flat: one chunk buffer in, one out, whatever the layer size. Decryption writes
plaintext only to the caller's output and raises :class:`HmacMismatch` at the end if the MAC
fails; the caller must then discard that output (``encrypt.py`` and :func:`decrypt_file` do).

Imports nothing of the project but ``ccpipe.stages.sign.errors``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ccpipe.oci.errors import BlobDigestMismatch
from ccpipe.stages.sign.errors import (
    EncryptionMetadataInvalid,
    HmacMismatch,
    PlaintextDigestMismatch,
    UnsupportedCipher,
)

CIPHER_AES_CTR_HMAC = "AES_256_CTR_HMAC_SHA256"
ANNOTATION_PREFIX = "org.opencontainers.image.enc."
ANNOTATION_PUBOPTS = "org.opencontainers.image.enc.pubopts"
CHUNK_SIZE = 1 << 20  # 1 MiB keeps AES-CTR at GB/s with update_into and the footprint tiny

_KEY_LEN = 32
_NONCE_LEN = 16


class Readable(Protocol):
    """A binary source read into a caller's buffer (a file opened ``rb``, a raw stream)."""

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Fill ``buffer``; the number of bytes read, 0 at end of stream."""
        ...


class Writable(Protocol):
    """A binary sink (a file opened ``wb``, a blob writer)."""

    def write(self, data: memoryview, /) -> int | None:
        """Write all of ``data``."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64d(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EncryptionMetadataInvalid(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncryptionMetadataInvalid(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class PrivateOptions:
    """What a recipient unwraps: the layer key, IV and plaintext digest (never logged)."""

    symkey: bytes = field(repr=False)
    """The 32-byte AES/HMAC key of one layer."""
    digest: str
    """``sha256:<hex>`` of the plaintext blob."""
    nonce: bytes = field(repr=False)
    """The 16-byte initial counter block."""

    def to_json(self) -> bytes:
        """The JSON ocicrypt wraps, fields in Go's struct order."""
        doc = {
            "symkey": _b64(self.symkey),
            "digest": self.digest,
            "cipheroptions": {"nonce": _b64(self.nonce)},
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PrivateOptions:
        """Parse unwrapped private options; raises :class:`EncryptionMetadataInvalid`."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise EncryptionMetadataInvalid("unwrapped private layer options are not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("cipheroptions"), dict):
            raise EncryptionMetadataInvalid("unwrapped private layer options have no cipheroptions")
        symkey = _b64d(doc.get("symkey"), "symkey")
        nonce = _b64d(doc["cipheroptions"].get("nonce"), "nonce")
        digest = doc.get("digest")
        if len(symkey) != _KEY_LEN or len(nonce) != _NONCE_LEN or not isinstance(digest, str):
            raise EncryptionMetadataInvalid("private layer options have a wrong key, nonce or digest")
        return cls(symkey=symkey, digest=digest, nonce=nonce)


@dataclass(frozen=True)
class PublicOptions:
    """What anyone may read: the cipher name and the HMAC of the ciphertext."""

    cipher: str
    hmac: bytes

    def to_annotation(self) -> str:
        """The value of ``org.opencontainers.image.enc.pubopts``."""
        doc = {"cipher": self.cipher, "hmac": _b64(self.hmac), "cipheroptions": {}}
        return _b64(json.dumps(doc, separators=(",", ":")).encode())

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> PublicOptions:
        """Read the public options of a layer; refuses a layer without an HMAC to check."""
        value = annotations.get(ANNOTATION_PUBOPTS)
        if value is None:
            raise EncryptionMetadataInvalid(f"layer has no {ANNOTATION_PUBOPTS} annotation (no HMAC to check)")
        try:
            doc = json.loads(_b64d(value, ANNOTATION_PUBOPTS))
        except ValueError as exc:
            raise EncryptionMetadataInvalid(f"{ANNOTATION_PUBOPTS} is not JSON") from exc
        if not isinstance(doc, dict):
            raise EncryptionMetadataInvalid(f"{ANNOTATION_PUBOPTS} is not a JSON object")
        if doc.get("cipher") != CIPHER_AES_CTR_HMAC:
            raise UnsupportedCipher(f"layer cipher {doc.get('cipher')!r} is not {CIPHER_AES_CTR_HMAC}")
        mac = _b64d(doc.get("hmac"), "hmac")
        if len(mac) != 32:
            raise EncryptionMetadataInvalid("the layer HMAC is not 32 bytes")
        return cls(cipher=CIPHER_AES_CTR_HMAC, hmac=mac)


@dataclass(frozen=True)
class EncryptedStream:
    """Result of encrypting one blob."""

    private: PrivateOptions
    public: PublicOptions
    cipher_digest: str | None
    """``sha256:<hex>`` of the ciphertext (the encrypted blob's name); None if not asked for."""
    size: int


def _hasher(digest: str | None) -> Any:
    algo = (digest or "sha256:").partition(":")[0]
    if algo not in ("sha256", "sha512"):
        raise EncryptionMetadataInvalid(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algo)


class _Pipeline:
    """Two-stage chunk pipeline: the caller's thread reads and runs ``front``, a worker runs ``back``.

    hashlib, HMAC and file writes release the GIL on large buffers, so the two stages run on
    two cores (about 2x the single-threaded rate). A small ring of output buffers bounds memory
    whatever the stream length. An error in the worker stops the reader at the next chunk.
    """

    def __init__(self, chunk_size: int, depth: int = 4) -> None:
        self._bufs = [bytearray(chunk_size + 15) for _ in range(depth)]  # update_into wants a block more
        self._inbuf = bytearray(chunk_size)
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        for i in range(depth):
            self._free.put(i)
        self._error: BaseException | None = None

    def run(
        self,
        src: Readable,
        front: Callable[[memoryview, bytearray], int],
        back: Callable[[memoryview], None],
    ) -> int:
        """Stream ``src`` through ``front`` (input chunk -> output buffer) then ``back``; returns the size."""
        worker = threading.Thread(target=self._work, args=(back,), name="ocicrypt-stream", daemon=True)
        worker.start()
        inview, size = memoryview(self._inbuf), 0
        try:
            while self._error is None and (n := src.readinto(inview)):
                slot = self._free.get()
                m = front(inview[:n], self._bufs[slot])
                self._full.put((slot, m))
                size += n
        finally:
            self._full.put(None)
            worker.join()
        if self._error is not None:
            raise self._error
        return size

    def _work(self, back: Callable[[memoryview], None]) -> None:
        while (item := self._full.get()) is not None:
            slot, m = item
            if self._error is None:
                try:
                    back(memoryview(self._bufs[slot])[:m])
                except BaseException as exc:  # handed to the reader thread, which re-raises it
                    self._error = exc
            self._free.put(slot)


def encrypt_stream(
    src: Readable,
    dst: Writable,
    *,
    expected_digest: str | None = None,
    digest_ciphertext: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> EncryptedStream:
    """Encrypt ``src`` into ``dst`` with a fresh key and IV from the OS CSPRNG.

    If ``expected_digest`` is given, the plaintext must hash to it (:class:`BlobDigestMismatch`
    otherwise), so a damaged source layer is never sealed. ``digest_ciphertext=False`` skips
    hashing the ciphertext when ``dst`` hashes it already (an OCI blob writer).
    """
    key, nonce = secrets.token_bytes(_KEY_LEN), secrets.token_bytes(_NONCE_LEN)
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    mac = hmac.new(key, digestmod=hashlib.sha256)
    plain_h, cipher_h = _hasher(expected_digest), hashlib.sha256()

    def front(chunk: memoryview, out: bytearray) -> int:
        plain_h.update(chunk)
        m = enc.update_into(chunk, out)
        if digest_ciphertext:
            cipher_h.update(memoryview(out)[:m])
        return m

    def back(ct: memoryview) -> None:
        mac.update(ct)
        dst.write(ct)

    size = _Pipeline(chunk_size).run(src, front, back)
    enc.finalize()  # CTR is a stream mode: nothing is held back
    plain_digest = f"{plain_h.name}:{plain_h.hexdigest()}"
    if expected_digest is not None and plain_digest != expected_digest:
        raise BlobDigestMismatch(f"layer {expected_digest} does not match its content ({plain_digest})")
    return EncryptedStream(
        private=PrivateOptions(symkey=key, digest=plain_digest, nonce=nonce),
        public=PublicOptions(cipher=CIPHER_AES_CTR_HMAC, hmac=mac.digest()),
        cipher_digest="sha256:" + cipher_h.hexdigest() if digest_ciphertext else None,
        size=size,
    )


def decrypt_stream(
    src: Readable,
    dst: Writable,
    private: PrivateOptions,
    public: PublicOptions,
    *,
    expected_cipher_digest: str | None = None,
    digest_plaintext: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[str, int]:
    """Decrypt ``src`` into ``dst``; returns ``(plaintext digest, size)``.

    Checks, in this order, at end of stream: the HMAC over the ciphertext
    (:class:`HmacMismatch`), the ciphertext digest if given (:class:`BlobDigestMismatch`),
    the plaintext digest from the private options (:class:`PlaintextDigestMismatch`). On any
    failure ``dst`` holds unauthenticated bytes that the caller must delete.
    ``digest_plaintext=False`` leaves the last check to ``dst`` (an OCI blob writer told to
    expect ``private.digest``), which hashes the plaintext anyway; the digest returned is then
    the expected one.
    """
    dec = Cipher(algorithms.AES(private.symkey), modes.CTR(private.nonce)).decryptor()
    mac = hmac.new(private.symkey, digestmod=hashlib.sha256)
    plain_h, cipher_h = _hasher(private.digest), _hasher(expected_cipher_digest)

    def front(ct: memoryview, out: bytearray) -> int:
        mac.update(ct)
        m = dec.update_into(ct, out)
        return m

    def back(pt: memoryview) -> None:
        if digest_plaintext:
            plain_h.update(pt)
        dst.write(pt)

    # the ciphertext hash runs beside the pipeline only when asked for, on the reader's side
    if expected_cipher_digest is not None:
        inner = front

        def front(ct: memoryview, out: bytearray) -> int:
            cipher_h.update(ct)
            return inner(ct, out)

    size = _Pipeline(chunk_size).run(src, front, back)
    dec.finalize()
    if not hmac.compare_digest(mac.digest(), public.hmac):
        raise HmacMismatch("the encrypted layer fails its HMAC check: ciphertext was modified")
    if expected_cipher_digest is not None:
        got = f"{cipher_h.name}:{cipher_h.hexdigest()}"
        if got != expected_cipher_digest:
            raise BlobDigestMismatch(f"encrypted blob {expected_cipher_digest} does not match its content")
    if not digest_plaintext:
        return private.digest, size
    plain_digest = f"{plain_h.name}:{plain_h.hexdigest()}"
    if plain_digest != private.digest:
        raise PlaintextDigestMismatch(f"decrypted layer is {plain_digest}, expected {private.digest}")
    return plain_digest, size


def decrypt_file(src: Path, dst: Path, private: PrivateOptions, public: PublicOptions) -> str:
    """Decrypt one file into another; ``dst`` exists afterwards only if every check passed."""
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    try:
        with src.open("rb") as s, tmp.open("wb") as d:
            digest, _ = decrypt_stream(s, d, private, public)
        os.replace(tmp, dst)
        return digest
    finally:
        tmp.unlink(missing_ok=True)
