"""Where the KBS keeps its three secrets, and how replicas on different hosts share them.

Every KBS replica must hold the same three secrets, or a guest's handshake breaks as soon as a
load balancer sends its next request to another replica:

* ``kek``: the resource store's key-encryption key (32 bytes), which unwraps every resource;
* ``session.key``: seals the session cookie (32 bytes), so any replica continues a handshake;
* ``token.key``: signs the attestation tokens (P-256, PEM PKCS#8), so any replica honours them;

and the public half of the KBS admin key, ``admin.pub``, so every replica accepts the same admin tokens.

By default they live in ``<data_dir>/keys/kbs/`` and are created on first use: replicas on one
data directory share them. Replicas on different hosts (or pods) get them from the deployment's
secret store instead: ``CCPIPE_KBS_KEYS_DIR`` names a directory (a mounted Kubernetes Secret, say)
that ``ccpipe kbs keys DIR`` filled once. There a missing file is an error, never created, so a
replica never silently invents keys of its own. ``CCPIPE_KBS_KEK_FILE`` (or PKCS#11) still takes
precedence for the KEK.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.pipeline.keyfiles import KeyMaterialError, load_or_create_private_file, write_private

KEYS_DIR_ENV = "CCPIPE_KBS_KEYS_DIR"
KEK_FILE = "kek"
SESSION_KEY_FILE = "session.key"
TOKEN_KEY_FILE = "token.key"
KEY_FILES = (KEK_FILE, SESSION_KEY_FILE, TOKEN_KEY_FILE)
ADMIN_PUBLIC_FILE = "admin.pub"
"""Beside them, the public half of the KBS admin key (its private half stays with the administrator)."""


def new_token_key() -> bytes:
    """A fresh P-256 token key, PEM PKCS#8."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_symmetric_key() -> bytes:
    """32 random bytes (a KEK or a session key)."""
    return secrets.token_bytes(32)


def load_kbs_secret(data_dir: Path, name: str) -> tuple[Path, bytes]:
    """The path and bytes of the KBS secret ``name`` (one of :data:`KEY_FILES`).

    From ``$CCPIPE_KBS_KEYS_DIR`` when set (the file must exist there), else from
    ``<data_dir>/keys/kbs/``, where a fresh key is created on first use.
    Raises :class:`KeyMaterialError` naming the missing file and how to make it.
    """
    configured = os.environ.get(KEYS_DIR_ENV)
    if configured:
        path = Path(configured) / name
        try:
            if path.stat().st_mode & 0o007:  # group access is the deployment's choice (a Secret's fsGroup)
                raise KeyMaterialError(f"KBS key file {path} is accessible to every user", hint=f"chmod 600 {path}")
            return path, path.read_bytes()
        except OSError as exc:
            raise KeyMaterialError(
                f"{KEYS_DIR_ENV} is {configured}, but its {name} cannot be read: {exc.strerror}",
                hint=f"fill the directory once with 'ccpipe kbs keys DIR' and give every KBS replica the same copy "
                     f"(e.g. a Kubernetes Secret), or unset {KEYS_DIR_ENV} to keep the keys in the data directory",
            ) from exc
    path = data_dir / "keys" / "kbs" / name
    return path, load_or_create_private_file(path, new_token_key if name == TOKEN_KEY_FILE else new_symmetric_key)


def create_kbs_keys(directory: Path, admin_public_pem: bytes) -> list[Path]:
    """Write the three KBS secrets (0600) and ``admin.pub`` into ``directory``; returns their paths.

    Raises :class:`KeyMaterialError` if any of them exists already (nothing is written then).
    """
    paths = [directory / name for name in (*KEY_FILES, ADMIN_PUBLIC_FILE)]
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise KeyMaterialError(f"{', '.join(taken)} already exist(s); the KBS keys are never replaced",
                               hint="choose an empty directory, or move the old keys away first")
    directory.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.name == ADMIN_PUBLIC_FILE:
            write_private(path, admin_public_pem)  # public, but the same mode keeps one rule for the directory
        else:
            write_private(path, new_token_key() if path.name == TOKEN_KEY_FILE else new_symmetric_key())
    return paths


__all__ = ["ADMIN_PUBLIC_FILE", "KEYS_DIR_ENV", "KEY_FILES", "create_kbs_keys", "load_kbs_secret",
           "new_symmetric_key", "new_token_key"]
