"""Private key files: written 0600 atomically, refused when readable by others."""

from __future__ import annotations

import stat
from pathlib import Path

from ccpipe.pipeline.audit.errors import KeyMaterialError
from ccpipe.pipeline.keyfiles import create_private_file


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
