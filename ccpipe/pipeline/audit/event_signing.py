"""Signed events, the trail's side: whose keys it trusts and what it concludes about each event.

Components sign what they emit (:mod:`ccpipe.pipeline.event_signature`: the
``Ccpipe-Signature`` header over :data:`~ccpipe.pipeline.event_signature.SIGNING_CONTEXT` ‖
canonical bytes). Here the trail checks them.

Trust. A :class:`Keyring` maps components to their public keys (the part the components
register themselves, :class:`ccpipe.pipeline.signing.ComponentKeyring`), plus the log's note
verifier keys; it is the trail's trust material, saved as JSON. The trail classifies each
event with :func:`check_event_signature` and *flags* anything but
:attr:`SignatureVerdict.VALID`; it never drops or silently indexes such an event.

Imports :mod:`ccpipe.crypto.ed25519` (the per-event check), the runtime's signature format and
:mod:`ccpipe.pipeline.audit` internals only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ccpipe.crypto import ed25519
from ccpipe.pipeline.audit.checkpoint import NoteVerifier
from ccpipe.pipeline.event_signature import SIGNING_CONTEXT, ComponentKey, MalformedSignature, parse_signature_header
from ccpipe.pipeline.signing import ComponentKeyring


class SignatureVerdict(StrEnum):
    """What the trail concluded about one event's signature."""

    VALID = "valid"
    """A registered key of the claimed component signed exactly these bytes."""
    BAD_SIGNATURE = "bad-signature"
    """The key is registered but the signature does not verify (altered or forged)."""
    UNKNOWN_KEY = "unknown-key"
    """No registered key has this id."""
    WRONG_SIGNER = "wrong-signer"
    """A valid signature, but by another component than the event's ``source.component``
    (or not by the key the event names in ``source.key_id``)."""
    UNSIGNED = "unsigned"
    """The message carried no ``Ccpipe-Signature`` header."""
    MALFORMED = "malformed"
    """The header is not ``<key_id>:<base64 signature>``."""


class Keyring(ComponentKeyring):
    """Component → event public keys, plus the log's note verifier keys.

    Saved as the components' keyring document with one more member::

        {"version": 1, "components": {…}, "log_keys": ["<C2SP verifier key>"]}
    """

    def __init__(self) -> None:
        super().__init__()
        self._log: dict[str, NoteVerifier] = {}

    def add_log_key(self, verifier: NoteVerifier | str) -> NoteVerifier:
        """Trust a log (checkpoint) verifier key, given as object or vkey string."""
        v = NoteVerifier.from_vkey(verifier) if isinstance(verifier, str) else verifier
        self._log[v.vkey] = v
        return v

    @property
    def log_keys(self) -> list[NoteVerifier]:
        """The trusted checkpoint verifier keys."""
        return list(self._log.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the class docstring)."""
        return {**super().to_json(), "log_keys": sorted(self._log)}

    def _read_members(self, doc: dict[str, Any]) -> None:
        """Parse ``log_keys``; raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` for a bad verifier key."""
        for vkey in doc.get("log_keys", []):
            self.add_log_key(str(vkey))


def verify_event_signature(
    keyring: Keyring, key_id: str, canonical_bytes: bytes, signature: bytes, *, component: str | None = None
) -> SignatureVerdict:
    """Check one signature over ``canonical_bytes``; never raises.

    With ``component``, a valid signature by another component's key is
    :attr:`SignatureVerdict.WRONG_SIGNER`.
    """
    entry = keyring.get(key_id)
    if entry is None:
        return SignatureVerdict.UNKNOWN_KEY
    # ccpipe.crypto.ed25519 checks through libsodium: the one rule, and ~45 µs per check instead
    # of ~75 µs with cryptography's key objects (this runs once per logged event).
    if not ed25519.verify(entry.public_key, SIGNING_CONTEXT + canonical_bytes, signature):
        return SignatureVerdict.BAD_SIGNATURE
    if component is not None and entry.component != component:
        return SignatureVerdict.WRONG_SIGNER
    return SignatureVerdict.VALID


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The verdict on one logged message, with who signed and who the event claims to be."""

    verdict: SignatureVerdict
    key_id: str | None = None
    signer: str | None = None
    """Component owning ``key_id`` in the keyring, if known."""
    claimed: str | None = None
    """The event's ``source.component``, if it parses."""


def _claimed_source(canonical_bytes: bytes) -> tuple[str | None, str | None]:
    try:
        source = json.loads(canonical_bytes).get("source", {})
        comp, kid = source.get("component"), source.get("key_id")
    except (ValueError, AttributeError):
        return None, None
    return (comp if isinstance(comp, str) else None), (kid if isinstance(kid, str) else None)


def check_event_signature(
    keyring: Keyring, canonical_bytes: bytes, header: str | None, *,
    source: tuple[str | None, str | None] | None = None,
) -> SignatureCheck:
    """Classify a logged message from its bytes and its ``Ccpipe-Signature`` header value.

    The signer must be the component the event names in ``source.component`` and, when the
    event names a ``source.key_id``, that very key. ``source`` = (component, key id) as already
    read from these bytes by the caller, to spare a second JSON parse. Never raises.
    """
    claimed, claimed_kid = source if source is not None else _claimed_source(canonical_bytes)
    if header is None:
        return SignatureCheck(SignatureVerdict.UNSIGNED, claimed=claimed)
    try:
        key_id, sig = parse_signature_header(header)
    except MalformedSignature:
        return SignatureCheck(SignatureVerdict.MALFORMED, claimed=claimed)
    verdict = verify_event_signature(keyring, key_id, canonical_bytes, sig, component=claimed or "")
    if verdict is SignatureVerdict.VALID and claimed_kid is not None and claimed_kid != key_id:
        verdict = SignatureVerdict.WRONG_SIGNER
    entry = keyring.get(key_id)
    return SignatureCheck(verdict, key_id, entry.component if entry else None, claimed)


def keyring_from(keys: Iterable[ComponentKey]) -> Keyring:
    """A keyring trusting the public halves of ``keys`` (handy in tests and the demo)."""
    ring = Keyring()
    for k in keys:
        ring.add(k.component, k.public_key)
    return ring
