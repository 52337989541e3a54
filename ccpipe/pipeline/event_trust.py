"""Whether an event can be trusted: signed by a registered key of a component allowed to emit it.

One rule for every reader of the trail. The audit log classifies each logged message with
:func:`check_event_signature` and flags anything but :attr:`SignatureVerdict.VALID`; every
consumer that acts on an event (the stage runtime for each stage's input, the scheduler, the
readers of earlier events through :func:`ccpipe.pipeline.reader.workload_event`) refuses it
through :class:`InputTrust`, which adds that the event must be stored under its own subject
(a genuine event copied under another workload id or type is a replay, not that workload's event).

Keys. The trusted public keys come from :func:`trusted_keys` alone: the keyring file of the data
directory, which holds exactly the keys the installation's admin enrolled (copied from NATS by
:class:`ccpipe.pipeline.enrolment_bus.EnrolmentMirror`), or, in a data directory without an admin
key, the keys components registered there themselves (:mod:`ccpipe.pipeline.signing`). A key
unknown to the file makes a consumer ask the mirror for fresh enrolments once
(:func:`register_key_refresher`), so a component enrolled a moment ago is not refused.

Imports the runtime's signature format, :mod:`ccpipe.crypto.ed25519` and the contract only
(never the audit package: the audit log imports this).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

from ccpipe.crypto import ed25519
from ccpipe.pipeline.event_signature import (
    SIGNATURE_HEADER,
    SIGNING_CONTEXT,
    MalformedSignature,
    parse_signature_header,
)
from ccpipe.pipeline.signing import ComponentKeyring, keyring_path
from ccpipe.schemas.cloudevents import envelope_view
from ccpipe.schemas.emitters import EMITTERS, Component
from ccpipe.schemas.envelope import Event, subject_for
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType

log = logging.getLogger("ccpipe.trust")


class SignatureVerdict(StrEnum):
    """What a reader concluded about one event's signature."""

    VALID = "valid"
    """A registered key of the claimed component signed exactly these bytes, and that component
    may emit the event's type."""
    BAD_SIGNATURE = "bad-signature"
    """The key is registered but the signature does not verify (altered or forged)."""
    UNKNOWN_KEY = "unknown-key"
    """No registered key has this id."""
    WRONG_SIGNER = "wrong-signer"
    """A valid signature, but by another component than the event's ``source.component``
    (or not by the key the event names in ``source.key_id``)."""
    NOT_EMITTER = "not-emitter"
    """Validly signed by the component it names, but that component may not emit this event
    type (:data:`ccpipe.schemas.emitters.EMITTERS`)."""
    WRONG_SUBJECT = "wrong-subject"
    """Validly signed, but stored under another subject than its own workload's and type's: a
    genuine event copied under another workload id (a replay)."""
    REVOKED_KEY = "revoked-key"
    """Signed by a key the installation's admin revoked, at or after the time of revocation (by the
    event's own ``occurred_at``)."""
    UNSIGNED = "unsigned"
    """The message carried no ``Ccpipe-Signature`` header."""
    MALFORMED = "malformed"
    """The header is not ``<key_id>:<base64 signature>``."""


def verify_event_signature(
    keyring: ComponentKeyring, key_id: str, canonical_bytes: bytes, signature: bytes, *, component: str | None = None
) -> SignatureVerdict:
    """Check one signature over ``canonical_bytes``; never raises.

    With ``component``, a valid signature by another component's key is
    :attr:`SignatureVerdict.WRONG_SIGNER`.
    """
    entry = keyring.get(key_id)
    if entry is None:
        return SignatureVerdict.UNKNOWN_KEY
    # ccpipe.crypto.ed25519 checks through libsodium: the one rule, and ~45 µs per check instead
    # of ~75 µs with cryptography's key objects (this runs once per logged or consumed event).
    if not ed25519.verify(entry.public_key, SIGNING_CONTEXT + canonical_bytes, signature):
        return SignatureVerdict.BAD_SIGNATURE
    if component is not None and entry.component != component:
        return SignatureVerdict.WRONG_SIGNER
    if entry.revoked_at is not None and not _occurred_before(canonical_bytes, entry.revoked_at):
        return SignatureVerdict.REVOKED_KEY
    return SignatureVerdict.VALID


def _occurred_before(canonical_bytes: bytes, moment: datetime) -> bool:
    # Only for revoked keys (rare): the full parse is affordable. An event whose time cannot be
    # read counts as signed after the revocation.
    try:
        return Event.from_wire(canonical_bytes).occurred_at < moment
    except (ValueError, InvalidInput):
        return False


def may_have_emitted(component: str | None, event_type: str | None) -> bool:
    """Whether ``component`` (an event's ``source.component``) may emit ``event_type`` (a wire name)."""
    if component is None or event_type is None:
        return False
    try:
        return Component(component) in EMITTERS.get(EventType(event_type), frozenset())
    except ValueError:  # not a component, or not an event type: nobody may emit it
        return False


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The verdict on one message, with who signed and who the event claims to be."""

    verdict: SignatureVerdict
    key_id: str | None = None
    signer: str | None = None
    """Component owning ``key_id`` in the keyring, if known."""
    claimed: str | None = None
    """The event's ``source.component``, if it parses."""


ClaimedSource = tuple[str | None, str | None, str | None, str | None]
"""(``source.component``, ``source.key_id``, ``type``, ``workload_id``) as read from an event's bytes."""


def claimed_source(canonical_bytes: bytes) -> ClaimedSource:
    """What an event's bytes say about its signer, type and workload (``None`` where they do not say)."""
    try:
        doc = envelope_view(json.loads(canonical_bytes))  # a CloudEvent, or a legacy envelope
        source = doc.get("source", {})
        values = (source.get("component"), source.get("key_id"), doc.get("type"), doc.get("workload_id"))
    except (ValueError, AttributeError, InvalidInput):
        return None, None, None, None
    comp, kid, etype, wl = (v if isinstance(v, str) else None for v in values)
    return comp, kid, etype, wl


def check_event_signature(
    keyring: ComponentKeyring, canonical_bytes: bytes, header: str | None, *, source: ClaimedSource | None = None,
    subject: str | None = None,
) -> SignatureCheck:
    """Classify a message from its bytes and its ``Ccpipe-Signature`` header value.

    The signer must be the component the event names in ``source.component`` and, when the
    event names a ``source.key_id``, that very key; that component must be allowed to emit the
    event's type; and, given the ``subject`` it was stored under, that must be the event's own.
    ``source`` = :func:`claimed_source` of these bytes when the caller has already read them
    (spares a second JSON parse). Never raises.
    """
    claimed, claimed_kid, event_type, workload_id = source if source is not None else claimed_source(canonical_bytes)
    if header is None:
        return SignatureCheck(SignatureVerdict.UNSIGNED, claimed=claimed)
    try:
        key_id, sig = parse_signature_header(header)
    except MalformedSignature:
        return SignatureCheck(SignatureVerdict.MALFORMED, claimed=claimed)
    verdict = verify_event_signature(keyring, key_id, canonical_bytes, sig, component=claimed or "")
    if verdict is SignatureVerdict.VALID and claimed_kid is not None and claimed_kid != key_id:
        verdict = SignatureVerdict.WRONG_SIGNER
    # bytes naming no type are no event (readers refuse them as such); one naming a type must
    # come from a component allowed to emit it
    if verdict is SignatureVerdict.VALID and event_type is not None and not may_have_emitted(claimed, event_type):
        verdict = SignatureVerdict.NOT_EMITTER
    if verdict is SignatureVerdict.VALID and subject is not None and subject != _own_subject(workload_id, event_type):
        verdict = SignatureVerdict.WRONG_SUBJECT
    entry = keyring.get(key_id)
    return SignatureCheck(verdict, key_id, entry.component if entry else None, claimed)


def _own_subject(workload_id: str | None, event_type: str | None) -> str | None:
    # the verdict is VALID here, so the type is one ccpipe knows
    return subject_for(workload_id, event_type) if workload_id and event_type else None


K = TypeVar("K", bound=ComponentKeyring)


class KeyringSource(Generic[K]):
    """A keyring as it is, and :func:`check_event_signature` against it."""

    def __init__(self, keyring: K) -> None:
        self.keyring = keyring

    def reload(self) -> bool:
        """Read the keyring again if its source changed; True if it was re-read (never, here)."""
        return False

    def check(self, data: bytes, header: str | None, source: ClaimedSource | None = None,
              subject: str | None = None) -> SignatureCheck:
        """:func:`check_event_signature`, reloading the keyring once when the key is unknown."""
        check = check_event_signature(self.keyring, data, header, source=source, subject=subject)
        if check.verdict is SignatureVerdict.UNKNOWN_KEY and self.reload():
            check = check_event_signature(self.keyring, data, header, source=source, subject=subject)
        return check


class KeyringFile(KeyringSource[K]):
    """A keyring read from its file and re-read when it changed (a component registered a key since).

    Read on first need (the first unknown key), not when made.
    """

    def __init__(self, path: Path, kind: type[K]) -> None:
        super().__init__(kind())
        self.path = path
        self._kind = kind
        self._stamp: tuple[int, int] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Read the file again if it changed since the last read; True if it was re-read.

        Raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if it exists but is unreadable.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self.keyring = self._kind.load(self.path) if stamp is not None else self._kind()
        self._stamp = stamp
        return True


def trusted_keys(data_dir: Path) -> KeyringFile[ComponentKeyring]:
    """The component keys consumers trust: the one place their source is chosen (see the module docstring)."""
    return KeyringFile(keyring_path(data_dir), ComponentKeyring)


KeyRefresher = Callable[[], Awaitable[bool]]
"""Fetches fresh enrolments into the keyring file; True if the trusted keys changed."""

_REFRESHERS: dict[Path, KeyRefresher] = {}


def register_key_refresher(data_dir: Path, refresher: KeyRefresher) -> Callable[[], None]:
    """Let consumers of ``data_dir``'s keys call ``refresher`` when they meet an unknown key; returns
    the function that withdraws it (the enrolment mirror registers itself while it runs)."""
    where = data_dir.resolve()
    _REFRESHERS[where] = refresher

    def withdraw() -> None:
        if _REFRESHERS.get(where) is refresher:
            del _REFRESHERS[where]

    return withdraw


async def refresh_trusted_keys(data_dir: Path) -> bool:
    """Ask the running enrolment mirror of ``data_dir`` for fresh enrolments; False if none runs or nothing changed."""
    refresher = _REFRESHERS.get(data_dir.resolve())
    return await refresher() if refresher is not None else False


class UntrustedEvent(InvalidInput):
    """An input event that is not signed by a component allowed to emit it, or not stored under its own subject."""

    code = "event.untrusted"
    default_hint = ("only events signed by an enrolled key of a component allowed to emit their type "
                    "(ccpipe.schemas.emitters) are acted on; the audit log flags this one")
    verdict: SignatureVerdict | None = None
    """Why, when it was the signature."""


@dataclass
class InputTrust:
    """Refuses input events that a consumer must not act on (see the module docstring)."""

    keys: KeyringFile[ComponentKeyring]
    data_dir: Path | None = None
    """Whose enrolment mirror to ask once when a key is unknown (:meth:`accept_current`)."""

    def accept(self, data: bytes, headers: dict[str, str] | None, subject: str) -> Event:
        """The event in ``data`` if it can be trusted as stored under ``subject``.

        Raises :class:`UntrustedEvent` naming the problem, or :class:`InvalidInput` if the bytes
        are no event at all.
        """
        check = self.keys.check(data, (headers or {}).get(SIGNATURE_HEADER), subject=subject)
        if check.verdict is not SignatureVerdict.VALID:
            refused = UntrustedEvent(
                f"event on {subject} is {check.verdict.value} (claims {check.claimed or '?'}, "
                f"signed by {check.signer or check.key_id or 'nobody'})"
            )
            refused.verdict = check.verdict
            raise refused
        return Event.from_wire(data)

    async def accept_current(self, data: bytes, headers: dict[str, str] | None, subject: str) -> Event:
        """:meth:`accept`, after fetching fresh enrolments once if the signing key is unknown (a
        component enrolled after this one last looked)."""
        try:
            return self.accept(data, headers, subject)
        except UntrustedEvent as exc:
            if exc.verdict is not SignatureVerdict.UNKNOWN_KEY or self.data_dir is None:
                raise
            if not await refresh_trusted_keys(self.data_dir):
                raise
        return self.accept(data, headers, subject)


def input_trust(data_dir: Path) -> InputTrust:
    """The :class:`InputTrust` of a component running with ``data_dir``."""
    return InputTrust(trusted_keys(data_dir), data_dir)
