"""Who can open an encrypted layer: JWE recipients, KBS-held image keys, and key unwrapping.

Two kinds of recipient wrap a layer's private options (``ocicrypt.PrivateOptions``):

* :class:`JweRecipient`: an RSA or EC public key; all JWE recipients of a layer share one JWE
  in ``org.opencontainers.image.enc.keys.jwe`` (skopeo's ``--encryption-key jwe:PUB.pem``).
* :class:`KbsRecipient`: an :class:`ImageKey`, a fresh 32-byte key-encryption key (KEK) that the
  caller registers as the KBS resource named by its ``kid`` (``kbs:///<repo>/<type>/<tag>``).
  The layer carries Confidential Containers' AnnotationPacket in
  ``org.opencontainers.image.enc.keys.provider.attestation-agent`` = base64(JSON
  ``{"kid","wrapped_data","iv","wrap_type":"A256GCM"}``), ``wrapped_data`` being
  AES-256-GCM(KEK, iv, no AAD) of the private options (ciphertext followed by the tag).

Each annotation value is a comma-separated list of base64 blobs, one per wrap result.
:func:`unwrap_private_options` tries the keys it is given on every blob and returns the first
private options that open. Key material is never part of a ``repr``.

JWE itself is :mod:`ccpipe.crypto.jose`; this module chooses ocicrypt's layout (below).
Imports nothing of the project but ``ccpipe.crypto`` and ``ccpipe.stages.sign``'s own modules.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ccpipe.crypto import jose
from ccpipe.schemas.json_input import load_json
from ccpipe.stages.sign.errors import (
    EncryptionMetadataInvalid,
    NoDecryptionKey,
    RecipientInvalid,
    UnsupportedCipher,
)
from ccpipe.stages.sign.ocicrypt import PrivateOptions

ANNOTATION_JWE = "org.opencontainers.image.enc.keys.jwe"
ANNOTATION_PROVIDER_PREFIX = "org.opencontainers.image.enc.keys.provider."
ANNOTATION_ATTESTATION_AGENT = ANNOTATION_PROVIDER_PREFIX + "attestation-agent"

_KID = re.compile(r"^kbs://[A-Za-z0-9.:\[\]-]*/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")

KeyResolver = Callable[[str], bytes | None]
"""Given a KBS resource URI, the 32-byte key stored there (or None): how a runner fetches KEKs."""


def _valid_kid(kid: str) -> bool:
    # "." and ".." are refused so a kid can never walk out of a KBS resource folder
    return bool(_KID.match(kid)) and not any(part in (".", "..") for part in kid.split("/")[3:])


def kbs_resource_uri(repository: str, kind: str, tag: str) -> str:
    """``kbs:///<repository>/<kind>/<tag>``, each part checked; raises :class:`RecipientInvalid`."""
    uri = f"kbs:///{repository}/{kind}/{tag}"
    if not _valid_kid(uri):
        raise RecipientInvalid(f"{uri!r} is not a KBS resource URI (parts: letters, digits, . _ -)")
    return uri


@dataclass(frozen=True)
class ImageKey:
    """A per-image key-encryption key and the KBS resource it is registered under.

    The caller registers ``kek`` at ``kid`` in the KBS and then drops this object; it is never
    written to disk nor put in an event. ``repr`` shows the ``kid`` only.
    """

    kid: str
    """KBS resource URI, ``kbs:///<repo>/<type>/<tag>``."""
    kek: bytes = field(repr=False)
    """32 bytes from the OS CSPRNG."""

    def __post_init__(self) -> None:
        if not _valid_kid(self.kid):
            raise RecipientInvalid(f"{self.kid!r} is not a KBS resource URI kbs:///<repo>/<type>/<tag>")
        if len(self.kek) != 32:
            raise RecipientInvalid("a KBS image key must be 32 bytes")

    @classmethod
    def generate(cls, kid: str) -> ImageKey:
        """A fresh key for ``kid``, from ``secrets`` (the OS CSPRNG)."""
        return cls(kid=kid, kek=secrets.token_bytes(32))


@dataclass(frozen=True)
class JweRecipient:
    """An RSA (>= 2048 bits) or EC (P-256/384/521) public key that may decrypt the image."""

    public_key: jose.PublicKey

    def __post_init__(self) -> None:
        _recipient_key(self.public_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> JweRecipient:
        """A recipient from a PEM public key (or an X.509 certificate); raises :class:`RecipientInvalid`."""
        try:
            if b"CERTIFICATE" in pem:
                from cryptography import x509

                key: Any = x509.load_pem_x509_certificate(pem).public_key()
            else:
                key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise RecipientInvalid("not a PEM public key or certificate") from exc
        return cls(_recipient_key(key))

    @classmethod
    def from_file(cls, path: str | Path) -> JweRecipient:
        """A recipient from a PEM file (skopeo's ``jwe:PATH``)."""
        try:
            return cls.from_pem(Path(path).read_bytes())
        except OSError as exc:
            raise RecipientInvalid(f"cannot read recipient key {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class KbsRecipient:
    """Wrap for an :class:`ImageKey` held by the KBS (the attestation-agent key provider)."""

    key: ImageKey


Recipient = JweRecipient | KbsRecipient
DecryptionKey = jose.PrivateKey | ImageKey | KeyResolver
"""A JWE private key, a known image key, or a resolver that fetches image keys by ``kid``."""


def parse_recipient(spec: str) -> Recipient:
    """A recipient from skopeo-style text: ``jwe:PUB.pem``."""
    protocol, sep, rest = spec.partition(":")
    if protocol == "jwe" and sep and rest:
        return JweRecipient.from_file(rest)
    raise RecipientInvalid(f"unsupported encryption key {spec!r}; use jwe:PUBLIC_KEY.pem")


def load_decryption_key(path: str | os.PathLike[str], password: bytes | None = None) -> jose.PrivateKey:
    """An RSA or EC private key from a PEM or DER file (skopeo's ``--decryption-key``)."""
    try:
        data = Path(path).read_bytes()
        key: Any = (
            serialization.load_pem_private_key(data, password)
            if b"-----BEGIN" in data
            else serialization.load_der_private_key(data, password)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise NoDecryptionKey(f"cannot load decryption key {path}: {exc}") from exc
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise NoDecryptionKey(f"{path} is neither an RSA nor an EC private key")
    return key


# --- the ocicrypt JWE ------------------------------------------------------------------------


def _recipient_key(key: object) -> jose.PublicKey:
    """``key`` if it can be a JWE recipient (RSA >= 2048 bits, EC P-256/384/521); raises :class:`RecipientInvalid`."""
    try:
        return jose.check_recipient_key(key)
    except jose.JwkInvalid as exc:
        raise RecipientInvalid(str(exc)) from exc


def _jwe_encrypt(plaintext: bytes, keys: Sequence[jose.PublicKey]) -> bytes:
    # As go-jose writes for ocicrypt: RSA-OAEP for RSA keys; one recipient gives the flattened
    # form with every header protected, several the general form with per-recipient headers.
    checked = [_recipient_key(k) for k in keys]
    if len(checked) == 1:
        doc: dict[str, Any] = jose.encrypt_flattened(plaintext, checked[0], rsa_alg=jose.RSA_OAEP)
    else:
        doc = jose.encrypt_general(plaintext, checked, rsa_alg=jose.RSA_OAEP)
    return json.dumps(doc, separators=(",", ":")).encode()


def _jwe_decrypt(blob: bytes, key: jose.PrivateKey) -> bytes | None:
    """The plaintext if ``key`` is a recipient of the JWE ``blob``, else None.

    Raises :class:`EncryptionMetadataInvalid` for a malformed JWE and :class:`UnsupportedCipher`
    for ``zip``, ``crit`` or an unknown ``enc``.
    """
    try:
        doc = load_json(blob)
    except ValueError as exc:
        raise EncryptionMetadataInvalid("JWE is not JSON with a protected header") from exc
    try:
        return jose.decrypt(doc, key)
    except jose.JweNotForKey:
        return None
    except jose.JweUnsupported as exc:
        raise UnsupportedCipher(str(exc)) from exc
    except jose.JweMalformed as exc:
        raise EncryptionMetadataInvalid(str(exc)) from exc


# --- wrapping --------------------------------------------------------------------------------


def _annotation_packet(key: ImageKey, private_options: bytes) -> bytes:
    iv = secrets.token_bytes(12)
    packet = {
        "kid": key.kid,
        "wrapped_data": base64.b64encode(AESGCM(key.kek).encrypt(iv, private_options, None)).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": "A256GCM",
    }
    return json.dumps(packet, separators=(",", ":")).encode()


def wrap_private_options(private: PrivateOptions, recipients: Sequence[Recipient]) -> dict[str, str]:
    """The key annotations of one layer: every recipient can unwrap ``private`` from them."""
    if not recipients:
        raise RecipientInvalid("an encrypted image needs at least one recipient")
    plain = private.to_json()
    out: dict[str, str] = {}
    jwe_keys = [r.public_key for r in recipients if isinstance(r, JweRecipient)]
    if jwe_keys:
        out[ANNOTATION_JWE] = base64.b64encode(_jwe_encrypt(plain, jwe_keys)).decode()
    packets = [_annotation_packet(r.key, plain) for r in recipients if isinstance(r, KbsRecipient)]
    if packets:
        out[ANNOTATION_ATTESTATION_AGENT] = ",".join(base64.b64encode(p).decode() for p in packets)
    return out


# --- unwrapping ------------------------------------------------------------------------------


def parse_annotation_packet(data: bytes) -> dict[str, Any]:
    """An AnnotationPacket (v1, or v2 with defaults ``version`` 0.1.0 and ``provider`` kbs)."""
    try:
        packet = load_json(data)
    except ValueError as exc:
        raise EncryptionMetadataInvalid("key-provider annotation is not JSON") from exc
    if not isinstance(packet, dict) or not isinstance(packet.get("kid"), str):
        raise EncryptionMetadataInvalid("key-provider annotation has no kid")
    packet.setdefault("version", "0.1.0")
    packet.setdefault("provider", "kbs")
    return packet


def unwrap_annotation_packet(packet: Mapping[str, Any], kek: bytes) -> PrivateOptions | None:
    """Open a ``kbs`` AnnotationPacket with its KEK; None if the KEK does not fit."""
    try:
        wrapped = base64.b64decode(packet["wrapped_data"], validate=True)
        iv = base64.b64decode(packet["iv"], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError) as exc:
        raise EncryptionMetadataInvalid("key-provider annotation lacks wrapped_data or iv") from exc
    if len(kek) != 32:
        return None
    try:
        if packet.get("wrap_type", "A256GCM") == "A256GCM":
            plain = AESGCM(kek).decrypt(iv, wrapped, None)
        elif packet.get("wrap_type") == "A256CTR" and len(iv) == 16:
            # unauthenticated, kept for old images; a wrong KEK then fails as malformed JSON below
            dec = Cipher(algorithms.AES(kek), modes.CTR(iv)).decryptor()
            plain = dec.update(wrapped) + dec.finalize()
        else:
            return None
        return PrivateOptions.from_json(plain)
    except (InvalidTag, ValueError, EncryptionMetadataInvalid):
        return None


def _keks_for(kid: str, keys: Sequence[DecryptionKey]) -> list[bytes]:
    keks: list[bytes] = []
    for key in keys:
        if isinstance(key, ImageKey):
            if key.kid == kid:
                keks.append(key.kek)
        elif callable(key) and not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            kek = key(kid)  # errors (a KBS that is down) propagate as they are
            if kek is not None:
                keks.append(kek)
    return keks


def _blobs(value: str, name: str) -> list[bytes]:
    try:
        return [base64.b64decode(part, validate=True) for part in value.split(",") if part]
    except (binascii.Error, ValueError) as exc:
        raise EncryptionMetadataInvalid(f"{name} is not comma-separated base64") from exc


def unwrap_private_options(annotations: Mapping[str, str], keys: Sequence[DecryptionKey]) -> PrivateOptions:
    """The layer's private options, opened with the first key that fits.

    Raises :class:`NoDecryptionKey` (naming the layer's recipients) if none does and
    :class:`EncryptionMetadataInvalid` for malformed key annotations.
    """
    private_keys = [k for k in keys if isinstance(k, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))]
    seen: list[str] = []
    if ANNOTATION_JWE in annotations:
        seen.append("JWE recipients")
        for blob in _blobs(annotations[ANNOTATION_JWE], ANNOTATION_JWE):
            for pk in private_keys:
                plain = _jwe_decrypt(blob, pk)
                if plain is not None:
                    return PrivateOptions.from_json(plain)
    for name, value in annotations.items():
        if not name.startswith(ANNOTATION_PROVIDER_PREFIX):
            continue
        for blob in _blobs(value, name):
            packet = parse_annotation_packet(blob)
            seen.append(f"{packet['provider']} key {packet['kid']}")
            if packet["provider"] != "kbs":
                continue
            for kek in _keks_for(packet["kid"], keys):
                opened = unwrap_annotation_packet(packet, kek)
                if opened is not None:
                    return opened
    if not seen:
        raise EncryptionMetadataInvalid("encrypted layer carries no wrapped key (jwe or key-provider annotation)")
    raise NoDecryptionKey(
        f"none of the {len(keys)} given key(s) opens this layer (it is wrapped for: {', '.join(seen)})"
    )
