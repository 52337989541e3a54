"""C2SP signed notes (``c2sp.org/signed-note``) and tlog checkpoints (``c2sp.org/tlog-checkpoint``).

A checkpoint is the note text ``origin\\nsize\\nbase64(root)\\n`` (plus optional extension
lines), followed by a blank line and one line per signature,
``— <key name> base64(key hash[4] ‖ Ed25519 signature)``. The key hash is
SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]; a verifier key is the string
``name+hex(key hash)+base64(0x01 ‖ public key)``, and a log signing key is stored as
``PRIVATE+KEY+name+hex(key hash)+base64(0x01 ‖ seed)`` (the Go ``sumdb/note`` spelling).

Opening a note (as the spec requires): signatures from unknown keys are ignored; a
signature from a known key that does not verify rejects the whole note; a note with no
verified signature is rejected; repeated signatures by one key count once; more than
:data:`MAX_SIGNATURES` lines are refused.

Imports ``cryptography`` and :mod:`ccpipe.pipeline.audit.errors` only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ccpipe.crypto import ed25519
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.merkle import HASH_SIZE
from ccpipe.pipeline.keyfiles import KeyMaterialError, read_private, write_private

ALG_ED25519 = 0x01
"""Signature type byte of Ed25519 note signatures."""
MAX_SIGNATURES = 100
"""Most signature lines accepted in one note (the spec requires at least 16)."""
SIG_PREFIX = "\u2014 "
"""Every signature line starts with an em dash and a space."""

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


def _b64decode(text: str) -> bytes:
    # validate=True refuses characters outside the alphabet instead of skipping them.
    return base64.b64decode(text.encode("ascii"), validate=True)


def valid_key_name(name: str) -> bool:
    """Key names are non-empty and hold no Unicode space and no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_hash(name: str, typed_key: bytes) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4], ``typed_key`` = type ‖ public key."""
    return hashlib.sha256(name.encode() + b"\n" + typed_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        """The line as it appears in the note, newline included."""
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.key_hash + self.signature).decode()}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    """The signed text, ending in a newline, without the blank separator line."""
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        """The note in its wire form."""
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into text and signature lines; checks the syntax only.

    Raises :class:`CheckpointError` when the note is not valid UTF-8, holds a control
    character, lacks the blank separator line, or has a malformed signature line.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("signed note is not valid UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in data):
        raise CheckpointError("signed note contains a control character other than newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise CheckpointError("signed note has no blank line before its signatures")
    text, sig_block = data[: split + 1], data[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise CheckpointError("signed note has no signature lines, or they do not end in a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"signed note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    sigs = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"signature line does not start with an em dash: {line[:40]!r}")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        try:
            raw = _b64decode(b64)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise CheckpointError(f"signature by {name!r} is not base64") from exc
        if not valid_key_name(name) or len(raw) < 5:
            raise CheckpointError(f"signature line by {name!r} is malformed")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return Note(text, tuple(sigs))


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, key hash and public key."""

    name: str
    public_key: bytes
    key_hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not valid_key_name(self.name) or len(self.public_key) != 32:
            raise KeyMaterialError(f"note verifier {self.name!r} needs a valid name and a 32-byte Ed25519 key")
        object.__setattr__(self, "key_hash", key_hash(self.name, bytes([ALG_ED25519]) + self.public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexhash+base64(0x01 ‖ key)``; raises :class:`KeyMaterialError`."""
        # The name holds no "+", but base64 may: split off the first two fields only.
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise KeyMaterialError(f"verifier key {vkey!r} is not name+hexkeyhash+base64key")
        name, hex_hash, b64 = parts
        try:
            raw, want = _b64decode(b64), bytes.fromhex(hex_hash)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise KeyMaterialError(f"verifier key {vkey!r} has a bad hash or key encoding") from exc
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyMaterialError(f"verifier key {vkey!r} is not an Ed25519 (type 0x01) key")
        verifier = cls(name, raw[1:])
        if verifier.key_hash != want:
            raise KeyMaterialError(f"verifier key {vkey!r}: the key hash does not match the key")
        return verifier

    @property
    def vkey(self) -> str:
        """The verifier key string."""
        typed = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{typed}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature of ``text``."""
        return ed25519.verify(self.public_key, text, signature)


class NoteSigner:
    """An Ed25519 note signing key (the log key)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier(name, raw)
        self.name = name
        self._key = private_key

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A fresh random key named ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+name+hexhash+base64(0x01 ‖ seed)``; raises :class:`KeyMaterialError`."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyMaterialError("signing key is not PRIVATE+KEY+name+hexkeyhash+base64key")
        try:
            raw = _b64decode(parts[4])
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise KeyMaterialError("signing key is not base64") from exc
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyMaterialError("signing key is not an Ed25519 (type 0x01) key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.key_hash.hex() != parts[3].lower():
            raise KeyMaterialError("signing key: the key hash does not match the key")
        return signer

    def skey(self) -> str:
        """The private key string (keep it secret)."""
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_hash.hex()}+{b64}"

    def sign(self, text: bytes) -> NoteSignature:
        """This key's signature line for ``text``."""
        return NoteSignature(self.name, self.verifier.key_hash, self._key.sign(text))

    @classmethod
    def load_or_create(cls, path: Path, name: str | Callable[[], str]) -> NoteSigner:
        """The log key stored at ``path`` (mode 0600), created on first use.

        ``name`` is the key's name, or a function that names a key created now (a stored key
        then keeps whatever name it was created with). Raises :class:`KeyMaterialError` if the
        file is unreadable, too open, or holds a key with another name than a fixed ``name``.
        """
        if not path.exists():
            write_private(path, (cls.generate(name if isinstance(name, str) else name()).skey() + "\n").encode())
        signer = cls.from_skey(read_private(path).decode("ascii", "replace"))
        if isinstance(name, str) and signer.name != name:
            raise KeyMaterialError(f"log key {path} is named {signer.name!r}, not {name!r}")
        return signer


def sign_note(text: str, signers: Iterable[NoteSigner], keep: Sequence[NoteSignature] = ()) -> bytes:
    """A signed note of ``text`` (which must end in a newline), signed by each signer.

    ``keep`` are existing signatures (e.g. witness cosignatures) to carry over. Raises
    :class:`CheckpointError` if the text is not note text.
    """
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("note text must end in a newline and hold no other control characters")
    new = [s.sign(text.encode()) for s in signers]
    have = {(s.name, s.key_hash) for s in new}
    sigs = [s for s in keep if (s.name, s.key_hash) not in have] + new
    if not sigs:
        raise CheckpointError("a signed note needs at least one signature")
    return Note(text, tuple(sigs)).encode()


def open_note(data: bytes | str, verifiers: Iterable[NoteVerifier]) -> tuple[Note, list[NoteSignature]]:
    """Parse ``data`` and verify it; returns the note and the signatures that verified.

    Raises :class:`CheckpointError` when it is malformed, when a known key's signature fails,
    or when no known key signed it.
    """
    note = parse_note(data)
    known = {(v.name, v.key_hash): v for v in verifiers}
    text = note.text.encode()
    verified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in note.signatures:
        ident = (sig.name, sig.key_hash)
        verifier = known.get(ident)
        if verifier is None or ident in seen:
            continue
        seen.add(ident)
        if not verifier.verify(text, sig.signature):
            raise CheckpointError(f"signature by {sig.name!r} ({sig.key_hash.hex()}) does not verify")
        verified.append(sig)
    if not verified:
        names = ", ".join(sorted({s.name for s in note.signatures})) or "nobody"
        raise CheckpointError(f"no trusted key signed this note (signed by: {names})")
    return note, verified


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size, RFC 6962 root, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root) != HASH_SIZE:
            raise CheckpointError("a checkpoint needs an origin line, a size ≥ 0 and a 32-byte root")
        if any(not e or "\n" in e for e in self.extensions):
            raise CheckpointError("checkpoint extension lines must be non-empty single lines")

    def text(self) -> str:
        """The note text: ``origin\\nsize\\nbase64 root\\n`` plus extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; raises :class:`CheckpointError` naming the bad line."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint text needs origin, size and root lines")
        origin, size, root_b64, *ext = lines
        if not _SIZE_RE.fullmatch(size):
            raise CheckpointError(f"checkpoint size {size!r} is not a decimal without leading zeros")
        try:
            root = _b64decode(root_b64)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise CheckpointError("checkpoint root is not base64") from exc
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root is {len(root)} bytes, not {HASH_SIZE}")
        return cls(origin, int(size), root, tuple(ext))


def sign_checkpoint(checkpoint: Checkpoint, *signers: NoteSigner) -> bytes:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.text(), signers)


def open_checkpoint(data: bytes | str, verifiers: Iterable[NoteVerifier], *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    ``origin``, when given, must equal the checkpoint's origin line. Raises
    :class:`CheckpointError`.
    """
    note, _ = open_note(data, verifiers)
    checkpoint = Checkpoint.from_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
