"""The signature a component puts on each event it emits, and the component's key file.

Wire form. A component publishes the event's canonical bytes (RFC 8785, unchanged: they
are the Merkle leaf) with one NATS header::

    Ccpipe-Signature: <key_id>:<base64 Ed25519 signature>

``key_id`` is :func:`key_id_for` of the signer's raw 32-byte public key (the first 16 bytes
of its SHA-256, in hex). The signature covers :data:`SIGNING_CONTEXT` ‖ canonical bytes; the
fixed prefix keeps an event signature from ever being valid for another message kind
signed by the same key (a checkpoint note, a future protocol). Headers are not part of the
leaf, so re-signing or adding a header never changes the log.

Keys. :func:`load_or_create_component_key` keeps a component's private key as PKCS#8 PEM
at ``<data_dir>/keys/events/<component>.key``, mode 0600, and refuses a key file other
users can read.

This is the runtime's side: every component signs with it. Checking signatures against the
trail's keyring is the audit log's (:mod:`ccpipe.pipeline.audit.event_signing`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.pipeline.keyfiles import KeyMaterialError, read_private, write_private
from ccpipe.schemas.errors import CcpipeError

SIGNATURE_HEADER = "Ccpipe-Signature"
"""NATS header carrying ``<key_id>:<base64 signature>``."""
SIGNING_CONTEXT = b"ccpipe event signature v1\n"
"""Prefix of every signed message (domain separation); the event bytes follow it."""
KEY_ID_HEX_CHARS = 32
"""Key ids are the first 128 bits of SHA-256(raw public key), in hex."""

_COMPONENT_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_KEY_ID_RE = re.compile(rf"[0-9a-f]{{{KEY_ID_HEX_CHARS}}}")


class MalformedSignature(CcpipeError):
    """A ``Ccpipe-Signature`` header is not ``<key_id>:<base64 signature>``."""

    code = "audit.signature.malformed"  # stable: the audit trail's code before the format moved here
    default_hint = "the publisher must send Ccpipe-Signature: <key_id>:<base64 Ed25519 signature>"


def key_id_for(public_key: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX_CHARS]


def check_component(component: str) -> None:
    """Refuse a component name that cannot be a key file name; raises :class:`KeyMaterialError`."""
    if not _COMPONENT_RE.fullmatch(component):
        raise KeyMaterialError(
            f"component name {component!r} is not allowed",
            hint="use lower-case letters, digits, '.', '_' and '-'",
        )


@dataclass(frozen=True, slots=True)
class ComponentKey:
    """A component's private event-signing key."""

    component: str
    private_key: Ed25519PrivateKey
    public_key: bytes = field(init=False, repr=False, compare=False)
    """The raw 32-byte public key (what gets registered in the keyring)."""
    key_id: str = field(init=False, repr=False, compare=False)
    """:func:`key_id_for` of the public key."""

    def __post_init__(self) -> None:
        # Derived once: every event a component signs names its key id.
        public = self.private_key.public_key().public_bytes_raw()
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "key_id", key_id_for(public))

    @classmethod
    def generate(cls, component: str) -> ComponentKey:
        """A fresh random key; raises :class:`KeyMaterialError` for a bad component name."""
        check_component(component)
        return cls(component, Ed25519PrivateKey.generate())


def component_key_path(data_dir: Path, component: str) -> Path:
    """Where a component's key lives under the data directory."""
    check_component(component)
    return data_dir / "keys" / "events" / f"{component}.key"


_PEM_BEGIN, _PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
"""The DER of an unencrypted PKCS#8 Ed25519 key (RFC 8410) up to its 32-byte seed: what
``private_bytes(PEM, PKCS8, NoEncryption())`` writes for every key made here."""


def _plain_ed25519_pem(data: bytes) -> Ed25519PrivateKey | None:
    """The key of a PEM file that is exactly an unencrypted PKCS#8 Ed25519 key, else None.

    Read without ``cryptography.hazmat.primitives.serialization``, whose import (its SSH module
    and the cipher tables it loads) is a tenth of what ``ccpipe submit`` costs: the hook signs
    with a key in this form. Anything else goes to the full PEM loader, which says what is wrong.
    """
    text = data.strip()
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)):
        return None
    try:
        der = binascii.a2b_base64(b"".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split()), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != 48 or not der.startswith(_ED25519_PKCS8_PREFIX):
        return None
    return Ed25519PrivateKey.from_private_bytes(der[16:])


def read_ed25519_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file only its owner can read; raises :class:`KeyMaterialError`
    if it is missing, too open or not such a key."""
    data = read_private(path)
    plain = _plain_ed25519_pem(data)
    if plain is not None:
        return plain
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyMaterialError(f"key file {path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"key file {path} does not hold an Ed25519 key")
    return key


def load_component_key(data_dir: Path, component: str) -> ComponentKey:
    """Read a component's key; raises :class:`KeyMaterialError` if missing, too open or bad."""
    return ComponentKey(component, read_ed25519_private_key(component_key_path(data_dir, component)))


def load_or_create_component_key(data_dir: Path, component: str) -> ComponentKey:
    """The component's key, generated and written (0600) on first use."""
    path = component_key_path(data_dir, component)
    if not path.exists():
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        key = ComponentKey.generate(component)
        pem = key.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            write_private(path, pem)
        except KeyMaterialError:
            if not path.exists():  # lost a race with another process: use its key
                raise
    return load_component_key(data_dir, component)


def sign_event(key: ComponentKey, canonical_bytes: bytes) -> bytes:
    """The 64-byte Ed25519 signature of one event's canonical bytes."""
    return key.private_key.sign(SIGNING_CONTEXT + canonical_bytes)


def format_signature_header(key_id: str, signature: bytes) -> str:
    """The ``Ccpipe-Signature`` header value."""
    return f"{key_id}:{base64.b64encode(signature).decode()}"


def signature_header(key: ComponentKey, canonical_bytes: bytes) -> str:
    """Sign ``canonical_bytes`` and return the header value to publish beside them."""
    return format_signature_header(key.key_id, sign_event(key, canonical_bytes))


def parse_signature_header(value: str) -> tuple[str, bytes]:
    """Split a header value into key id and signature; raises :class:`MalformedSignature`."""
    key_id, sep, b64 = value.strip().partition(":")
    try:
        sig = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedSignature(f"{SIGNATURE_HEADER} signature is not base64") from exc
    if not sep or not _KEY_ID_RE.fullmatch(key_id) or len(sig) != 64:
        raise MalformedSignature(f"{SIGNATURE_HEADER} is not <{KEY_ID_HEX_CHARS} hex key id>:<base64 64-byte sig>")
    return key_id, sig
