"""Every component signs the events it emits; its public key is registered with the trail.

The keys and the signature format are the audit trail's (:mod:`ccpipe.pipeline.audit.event_signing`);
this module is the runtime side: it gives a component its key (created on first use under
``<data_dir>/keys/events/``), registers the public key in the trail's keyring file
``<data_dir>/keys/events/keyring.json`` (under a lock, so concurrent components do not lose
each other's keys) and returns the header to publish beside each event.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Protocol

from ccpipe.pipeline.audit.event_signing import (
    SIGNATURE_HEADER,
    ComponentKey,
    Keyring,
    load_or_create_component_key,
    signature_header,
)
from ccpipe.schemas.envelope import Event


class EventSigner(Protocol):
    """Returns the headers that sign one event (``Ccpipe-Signature``)."""

    def __call__(self, event: Event, data: bytes | None = None) -> dict[str, str]:
        """Sign ``event``; ``data``, when given, must be its canonical bytes (saves computing them twice)."""
        ...


def keyring_path(data_dir: Path) -> Path:
    """The trail's keyring file: every component's event public keys and the log keys."""
    return data_dir / "keys" / "events" / "keyring.json"


def register_public_key(data_dir: Path, key: ComponentKey) -> None:
    """Add ``key``'s public half to the keyring file (idempotent, safe against concurrent writers).

    Raises :class:`ccpipe.pipeline.audit.errors.KeyMaterialError` when the key id is already registered
    to another component or the keyring is unreadable.
    """
    path = keyring_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "keyring.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ring = Keyring.load(path) if path.exists() else Keyring()
        known = ring.get(key.key_id) is not None
        ring.add(key.component, key.public_key)  # idempotent; refuses a key of another component
        if not known:
            ring.save(path)


def component_key(data_dir: Path, component: str) -> ComponentKey:
    """The component's event-signing key, created and registered with the trail on first use."""
    key = load_or_create_component_key(data_dir, component)
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
