"""Where one launch keeps the pulled image, the decrypted image and the unpacked root.

Decrypted content goes on a RAM-backed tmpfs whenever there is one with room: ``/dev/shm``
(a tmpfs on every Linux with glibc), in a directory ``ccpipe-runner-<uid>/<launch>`` created
mode 0700. On tmpfs the plaintext never reaches a disk, so removing the directory after exit
really removes it (no blocks left on a disk, no journal, no backup of the data directory).
When ``/dev/shm`` is missing, is not a tmpfs, or has less free space than the launch needs,
the workspace falls back to ``<data_dir>/runner/work/<launch>``, also 0700 and also removed
after exit; the workspace says which (``kind``) and the launch logs it.

A private mount namespace with its own tmpfs would need privileges the runner does not ask
for; bubblewrap gives the *workload* a private tmpfs ``/tmp`` regardless.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ccpipe.enclave_runner.rootfs import remove_tree

SHM = Path("/dev/shm")
TMPFS_MAGIC = "tmpfs"


@dataclass(frozen=True)
class Workspace:
    """One launch's private directory and its parts."""

    path: Path
    kind: str
    """``tmpfs`` (RAM, /dev/shm) or ``disk`` (under the data directory)."""

    @property
    def pulled(self) -> Path:
        """OCI layout of the image as pulled (encrypted layers)."""
        return self.path / "pulled"

    @property
    def plain(self) -> Path:
        """OCI layout of the decrypted image."""
        return self.path / "plain"

    @property
    def rootfs(self) -> Path:
        """The unpacked root the sandbox runs."""
        return self.path / "rootfs"

    def others_can_traverse(self) -> bool:
        """Whether every directory from ``/`` to the workspace has ``o+x`` (so an unprivileged sandbox reaches it)."""
        return all(p.stat().st_mode & 0o001 for p in (self.path, *self.path.parents))

    def remove(self) -> None:
        """Remove everything, read-only directories of the image included."""
        remove_tree(self.path)


def _is_tmpfs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return False
    best = ""
    fstype = ""
    target = str(path.resolve())
    for cols in mounts:
        under = len(cols) >= 3 and (target == cols[1] or target.startswith(cols[1].rstrip("/") + "/"))
        if under and len(cols[1]) >= len(best):
            best, fstype = cols[1], cols[2]
    return fstype == TMPFS_MAGIC


def create_workspace(
    data_dir: Path, launch_id: str, *, needed_bytes: int = 0, shm: Path = SHM, traversable: bool = False
) -> Workspace:
    """A fresh 0700 workspace for ``launch_id`` (tmpfs when it has room, see the module docstring).

    ``traversable`` makes it and its base 0711 instead (searchable, not listable), so a sandbox
    running as another host uid can reach the root below it; ``launch_id`` must then hold an
    unguessable part, which is what keeps other local users out.
    """
    base: Path | None = None
    kind = "disk"
    if shm.is_dir() and _is_tmpfs(shm):
        try:
            if shutil.disk_usage(shm).free > needed_bytes + (64 << 20):
                base, kind = shm / f"ccpipe-runner-{os.getuid()}", "tmpfs"
        except OSError:
            base = None
    if base is None:
        base = data_dir / "runner" / "work"
    mode = 0o711 if traversable else 0o700
    base.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(base, mode)
    path = base / launch_id
    if path.exists():
        remove_tree(path)  # a crashed earlier attempt of the same launch
    path.mkdir(mode=0o700)
    os.chmod(path, mode)
    return Workspace(path, kind)
