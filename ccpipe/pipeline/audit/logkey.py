"""The log's checkpoint signing key and its place in the trail's keyring.

The key lives at ``<data_dir>/keys/audit/log.key`` (C2SP ``PRIVATE+KEY+…`` text, mode 0600),
created on first use. Its verifier key is added to the keyring file
(:func:`ccpipe.pipeline.signing.keyring_path`) as a log key, under the same lock the components use
to register their event keys, so ``ccpipe audit verify`` and export bundles find it there.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from ccpipe.pipeline.audit.checkpoint import NoteSigner, NoteVerifier
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.signing import keyring_path

LOG_KEY_NAME = "ccpipe-audit"
"""Name of the log key, and the origin line of its checkpoints."""


def log_key_path(data_dir: Path) -> Path:
    """Where the log's signing key lives."""
    return data_dir / "keys" / "audit" / "log.key"


def register_log_key(data_dir: Path, verifier: NoteVerifier) -> None:
    """Add ``verifier`` to the keyring file's log keys (idempotent, safe against concurrent writers).

    Raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if the keyring is unreadable.
    """
    path = keyring_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "keyring.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ring = Keyring.load(path) if path.exists() else Keyring()
        if verifier.vkey not in {v.vkey for v in ring.log_keys}:
            ring.add_log_key(verifier)
            ring.save(path)


def log_signer(data_dir: Path) -> NoteSigner:
    """The log's signing key, created on first use and registered in the keyring.

    Raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if the key file is unusable.
    """
    signer = NoteSigner.load_or_create(log_key_path(data_dir), LOG_KEY_NAME)
    register_log_key(data_dir, signer.verifier)
    return signer


def load_keyring(data_dir: Path) -> Keyring:
    """The trail's keyring (empty when no component has registered yet)."""
    path = keyring_path(data_dir)
    return Keyring.load(path) if path.exists() else Keyring()
