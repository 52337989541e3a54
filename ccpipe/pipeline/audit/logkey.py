"""The log's checkpoint signing key and its place in the trail's keyring.

The key lives at ``<data_dir>/keys/audit/log.key`` (C2SP ``PRIVATE+KEY+…`` text, mode 0600),
created on first use with a unique origin as its name. Its verifier key is added to the keyring file
(:func:`ccpipe.pipeline.signing.keyring_path`) as a log key, under the same lock the components use
to register their event keys, so ``ccpipe audit verify`` and export bundles find it there.
"""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

from ccpipe.pipeline.audit.checkpoint import NoteSigner, NoteVerifier
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.signing import keyring_path, locked_keyring

LEGACY_LOG_KEY_NAME = "ccpipe-audit"
"""The name, and checkpoint origin, every log key had before origins were unique per installation:
a log created then keeps it (its key file stores it), so its old checkpoints still verify."""


def new_log_origin(hostname: str | None = None) -> str:
    """A unique, URL-like origin for a new log, ``<hostname>/ccpipe/<random id>`` (C2SP
    tlog-checkpoint: an origin names one log, so two installations' checkpoints never mix).

    It is also the log key's name (a key name holds no '+' and no space); the host name is
    reduced to lower-case letters, digits, '.' and '-'."""
    host = re.sub(r"[^a-z0-9.-]", "", (hostname if hostname is not None else socket.gethostname()).lower())
    return f"{host.strip('.-') or 'localhost'}/ccpipe/{secrets.token_hex(8)}"


def log_key_path(data_dir: Path) -> Path:
    """Where the log's signing key lives."""
    return data_dir / "keys" / "audit" / "log.key"


def register_log_key(data_dir: Path, verifier: NoteVerifier) -> None:
    """Add ``verifier`` to the keyring file's log keys (idempotent, safe against concurrent writers).

    Raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if the keyring is unreadable.
    """
    with locked_keyring(data_dir) as path:
        ring = Keyring.load(path) if path.exists() else Keyring()
        if verifier.vkey not in {v.vkey for v in ring.log_keys}:
            ring.add_log_key(verifier)
            ring.save(path)


def log_signer(data_dir: Path) -> NoteSigner:
    """The log's signing key, created on first use (named by :func:`new_log_origin`, which is
    then the origin of its checkpoints) and registered in the keyring. A stored key keeps its
    name, so an existing log keeps its origin.

    Raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if the key file is unusable.
    """
    signer = NoteSigner.load_or_create(log_key_path(data_dir), new_log_origin)
    register_log_key(data_dir, signer.verifier)
    return signer


def load_keyring(data_dir: Path) -> Keyring:
    """The trail's keyring (empty when no component has registered yet)."""
    path = keyring_path(data_dir)
    return Keyring.load(path) if path.exists() else Keyring()
