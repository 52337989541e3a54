"""Every component signs the events it emits; its public key is registered with the trail.

The signature format and the key files are in :mod:`ccpipe.pipeline.event_signature`. This
module gives a component its key (created on first use under ``<data_dir>/keys/events/``),
and returns the header to publish beside each event. Which public keys the trail trusts is
kept in the keyring file ``<data_dir>/keys/events/keyring.json`` (written under a lock, so
concurrent writers do not lose each other's keys):

* with an admin key pinned in the data directory (:func:`enrolled_mode`: every installation
  ``ccpipe up`` or ``ccpipe admin init`` made), its component keys are exactly those the admin
  enrolled, copied there by :class:`ccpipe.pipeline.enrolment_bus.EnrolmentMirror`; a
  component registers nothing itself;
* without one (a bare data directory that stages share on one host, as in library use), each
  component registers its own key there on first use.

The keyring file is shared with the audit log, which adds its own members (the log's
checkpoint keys) and checks every event against it (:class:`ccpipe.pipeline.audit.event_signing.Keyring`
extends :class:`ComponentKeyring`). Registering a component keeps those members as they were.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ccpipe.pipeline.event_signature import (
    SIGNATURE_HEADER,
    ComponentKey,
    check_component,
    key_id_for,
    load_or_create_component_key,
    signature_header,
)
from ccpipe.pipeline.keyfiles import KeyMaterialError

if TYPE_CHECKING:
    from ccpipe.schemas.envelope import Event

KEYRING_VERSION = 1
_OWN_MEMBERS = ("version", "components")
_AUDIT_MEMBERS: dict[str, Any] = {"log_keys": []}
"""The audit log's members of a fresh keyring, written empty so the file has the same shape
whoever writes it first."""


class EventSigner(Protocol):
    """Returns the headers that sign one event (``Ccpipe-Signature``)."""

    def __call__(self, event: Event, data: bytes | None = None) -> dict[str, str]:
        """Sign ``event``; ``data``, when given, must be its canonical bytes (saves computing them twice)."""
        ...


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """A public key the trail trusts for one component."""

    component: str
    public_key: bytes
    key_id: str
    revoked_at: datetime | None = None
    """When the installation's admin revoked it (events it signs from then on are refused), if it did."""


class ComponentKeyring:
    """Component → event public keys: the ``components`` member of the keyring file.

    Each key id belongs to exactly one component; a component may hold several keys
    (rotation). Saved as JSON::

        {"version": 1,
         "components": {"build": [{"key_id": "…", "public_key": "<base64 raw key>"}]},
         …}

    Members other than ``version`` and ``components`` belong to the audit log; this class
    keeps them as read (:meth:`_read_members` is where a subclass parses them instead).
    """

    def __init__(self) -> None:
        self._by_id: dict[str, RegisteredKey] = {}
        self._other_members: dict[str, Any] = dict(_AUDIT_MEMBERS)

    def add(self, component: str, public_key: bytes, *, revoked_at: datetime | None = None) -> RegisteredKey:
        """Register ``public_key`` for ``component`` (idempotent), revoked from ``revoked_at`` if given.

        Raises :class:`KeyMaterialError` for a malformed key or one already registered to
        another component.
        """
        check_component(component)
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise KeyMaterialError(f"public key for {component!r} is not a 32-byte Ed25519 key") from exc
        entry = RegisteredKey(component, bytes(public_key), key_id_for(public_key), revoked_at)
        existing = self._by_id.get(entry.key_id)
        if existing is not None and existing != entry:
            raise KeyMaterialError(f"key {entry.key_id} is already registered to {existing.component!r}")
        self._by_id[entry.key_id] = entry
        return entry

    def get(self, key_id: str) -> RegisteredKey | None:
        """The registered key with this id, if any."""
        return self._by_id.get(key_id)

    def keys_of(self, component: str) -> list[RegisteredKey]:
        """Every key registered for ``component``."""
        return [k for k in self._by_id.values() if k.component == component]

    def components(self) -> list[str]:
        """Components with at least one key, sorted."""
        return sorted({k.component for k in self._by_id.values()})

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the class docstring)."""
        comps: dict[str, list[dict[str, str]]] = {}
        for k in sorted(self._by_id.values(), key=lambda k: (k.component, k.key_id)):
            doc = {"key_id": k.key_id, "public_key": base64.b64encode(k.public_key).decode()}
            if k.revoked_at is not None:
                doc["revoked_at"] = k.revoked_at.isoformat()
            comps.setdefault(k.component, []).append(doc)
        return {**self._other_members, "version": KEYRING_VERSION, "components": comps}

    def replace_components(self, entries: list[RegisteredKey]) -> None:
        """Make ``entries`` the only component keys (the enrolled ones; see :mod:`ccpipe.pipeline.enrolment`)."""
        self._by_id = {}
        for e in entries:
            self.add(e.component, e.public_key, revoked_at=e.revoked_at)

    def _read_members(self, doc: dict[str, Any]) -> None:
        """Take the members this class does not own from ``doc`` (kept verbatim here)."""
        self._other_members = {k: v for k, v in doc.items() if k not in _OWN_MEMBERS}

    @classmethod
    def from_json(cls, doc: Any) -> Self:
        """Parse the JSON document; raises :class:`KeyMaterialError` naming what is wrong."""
        if not isinstance(doc, dict) or doc.get("version") != KEYRING_VERSION:
            raise KeyMaterialError("keyring is not a version 1 keyring document")
        ring = cls()
        try:
            for component, keys in dict(doc.get("components", {})).items():
                for k in keys:
                    revoked = datetime.fromisoformat(k["revoked_at"]) if k.get("revoked_at") else None
                    entry = ring.add(component, base64.b64decode(k["public_key"], validate=True), revoked_at=revoked)
                    if k.get("key_id", entry.key_id) != entry.key_id:
                        raise KeyMaterialError(f"keyring entry {k['key_id']} of {component!r} does not match its key")
            ring._read_members(doc)
        except (TypeError, KeyError, AttributeError, binascii.Error, ValueError) as exc:
            raise KeyMaterialError(f"keyring document is malformed: {exc!r}") from exc
        return ring

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a keyring file; raises :class:`KeyMaterialError`."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            if isinstance(exc, KeyMaterialError):
                raise
            raise KeyMaterialError(f"cannot read keyring {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        """Write the keyring atomically (public material: mode 0644)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)


def keyring_path(data_dir: Path) -> Path:
    """The trail's keyring file: every component's event public keys and the log keys."""
    return data_dir / "keys" / "events" / "keyring.json"


def admin_public_key_path(data_dir: Path) -> Path:
    """The installation admin's pinned public key (base64 text). Where it exists, only keys the
    admin enrolled are trusted (:mod:`ccpipe.pipeline.enrolment`) and components register nothing."""
    return data_dir / "keys" / "admin" / "admin.pub"


def enrolled_mode(data_dir: Path) -> bool:
    """Whether this data directory trusts enrolled keys only (an admin key is pinned in it)."""
    return admin_public_key_path(data_dir).exists()


@contextmanager
def locked_keyring(data_dir: Path) -> Iterator[Path]:
    """Hold the keyring file's lock (concurrent writers: components, the log key, the enrolment mirror)."""
    path = keyring_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "keyring.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def register_public_key(data_dir: Path, key: ComponentKey) -> None:
    """Add ``key``'s public half to the keyring file (idempotent, safe against concurrent writers).

    Raises :class:`KeyMaterialError` when the key id is already registered to another
    component or the keyring is unreadable.
    """
    with locked_keyring(data_dir) as path:
        ring = ComponentKeyring.load(path) if path.exists() else ComponentKeyring()
        known = ring.get(key.key_id) is not None
        ring.add(key.component, key.public_key)  # idempotent; refuses a key of another component
        if not known:
            ring.save(path)


def component_key(data_dir: Path, component: str) -> ComponentKey:
    """The component's event-signing key, created on first use.

    Without a pinned admin key (a single host's shared data directory) it is also registered
    in the keyring file; with one, registering is the admin's enrolment, and nothing is written.
    """
    key = load_or_create_component_key(data_dir, component)
    if not enrolled_mode(data_dir):
        register_public_key(data_dir, key)
    return key


def event_signer(data_dir: Path) -> EventSigner:
    """A signer that signs each event with the key of the component named in its ``source``."""
    keys: dict[str, ComponentKey] = {}

    def sign(event: Event, data: bytes | None = None) -> dict[str, str]:
        component = event.source.component
        key = keys.get(component)
        if key is None:
            key = keys[component] = component_key(data_dir, component)
        return {SIGNATURE_HEADER: signature_header(key, event.canonical_bytes() if data is None else data)}

    return sign
