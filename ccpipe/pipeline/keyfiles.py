"""Key files that several processes may create at once (KBS workers, replicas, components).

:func:`create_private_file` writes the bytes to a private temporary file and ``link()``s it into
place: a reader never sees a half-written key, and of creators racing on a fresh data
directory exactly one wins while the others use the winner's key (``O_EXCL`` on the target
itself would let a reader see it empty, and ``rename`` would let the last writer silently
replace a key others already loaded).

:func:`write_private` and :func:`read_private` are the strict forms for signing keys (the
components' event keys, the audit log's key): they raise :class:`KeyMaterialError`, and
reading refuses a key file other users can access.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from ccpipe.schemas.errors import ConfigurationError


class KeyMaterialError(ConfigurationError):
    """A key file, verifier key string or keyring cannot be used.

    A configuration problem (exit 3): these files are the data directory's, so a damaged one is
    a damaged data directory, not bad input to one command.
    """

    code = "audit.key.invalid"  # stable: it was the audit trail's before the runtime took the key files
    default_hint = (
        "restore it from a backup of the data directory (a new key cannot verify what the old one signed)"
    )


def create_private_file(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600, parent 0700) holding ``data`` unless it exists.

    Returns True if this call created it, False if it already existed. Raises ``OSError``
    when the directory is not writable.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data):x}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from the first byte
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # refuses to replace: the first creator wins
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_private_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes of ``path``, created with ``make()`` first if it does not exist (see above)."""
    if not path.exists():
        create_private_file(path, make())
    return path.read_bytes()


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; never replaces an existing key.

    Raises :class:`KeyMaterialError` if the file exists or cannot be written.
    """
    try:
        created = create_private_file(path, data)
    except OSError as exc:
        raise KeyMaterialError(f"cannot write key file {path}: {exc.strerror}") from exc
    if not created:
        raise KeyMaterialError(
            f"key file {path} already exists", hint="load it instead, or move it away to make a new one"
        )


def read_private(path: Path) -> bytes:
    """The bytes of a key file that only its owner can read.

    Raises :class:`KeyMaterialError` if it is missing or group/world accessible.
    """
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise KeyMaterialError(
                f"key file {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"run: chmod 600 {path}",
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyMaterialError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise KeyMaterialError(f"cannot read key file {path}: {exc.strerror}") from exc
