"""Where one launch keeps the pulled image, the decrypted image and the unpacked root.

Decrypted content goes on a RAM-backed tmpfs whenever there is one with room: ``/dev/shm``
(a tmpfs on every Linux with glibc), in a directory ``ccpipe-runner-<uid>-<hash>/<launch>``
created mode 0700. On tmpfs the plaintext never reaches a disk, so removing the directory after
exit really removes it (no blocks left on a disk, no journal, no backup of the data directory).
When ``/dev/shm`` is missing, is not a tmpfs, or has less free space than the launch needs,
the workspace falls back to ``<data_dir>/runner/work/<launch>``, also 0700 and also removed
after exit; the workspace says which (``kind``) and the launch logs it.

The tmpfs root is per data directory (``<hash>`` is of the data directory's resolved path), so
runners of different data directories on one host never chmod or remove each other's root.
Every live workspace holds a shared ``flock`` on ``<root>/.lock``; removing a workspace removes
the root too once no workspace of any process holds it (so the root goes when the runner stops),
and every new workspace first sweeps the roots of this uid that nobody holds (their owners died:
the kernel drops a dead process's locks, so a reused pid cannot keep a stale root alive).

A private mount namespace with its own tmpfs would need privileges the runner does not ask
for; bubblewrap gives the *workload* a private tmpfs ``/tmp`` regardless.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.rootfs import remove_tree

SHM = Path("/dev/shm")
TMPFS_MAGIC = "tmpfs"
LOCK_NAME = ".lock"
"""The file in a tmpfs root on which each live workspace holds a shared lock."""
GONE = ".gone-"
"""A root being removed is first renamed ``<root>.gone-<random>``."""


def shm_root(data_dir: Path, shm: Path = SHM) -> Path:
    """The tmpfs root of the runner of ``data_dir``: one per (uid, data directory)."""
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:16]
    return shm / f"ccpipe-runner-{os.getuid()}-{digest}"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one a remover unlinked meanwhile)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino)


def _hold_root(root: Path, mode: int) -> int:
    """Create ``root`` if needed and hold a shared lock on it; returns the lock's descriptor."""
    while True:
        try:
            root.mkdir(exist_ok=True, mode=mode)
            os.chmod(root, mode)
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:  # a remover took the root away meanwhile
            continue
        # blocks only while a remover (exclusive) is at work; a root it removed is made again
        fcntl.flock(fd, fcntl.LOCK_SH)
        if _same_file(fd, root / LOCK_NAME):
            return fd
        os.close(fd)


def remove_root_if_unheld(root: Path) -> bool:
    """Remove a tmpfs root that no live workspace holds; True when it was removed.

    A root without a lock file (its creator died before making one) counts as unheld.
    """
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:  # gone already
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # some workspace, of this process or another, still uses it
            return False
        if not _same_file(fd, root / LOCK_NAME):
            return False
        # renamed first, under the exclusive lock: nobody can then open (or create) a lock file in
        # it by name; a holder waiting on the old lock finds it gone and makes a new root
        gone = root.with_name(f"{root.name}{GONE}{os.urandom(8).hex()}")
        os.rename(root, gone)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # a sweeper may be removing it too
        remove_tree(gone)
    return True


def sweep_stale_roots(shm: Path = SHM) -> list[Path]:
    """Remove this uid's tmpfs roots (of any data directory) that no live workspace holds; returns them.

    Also removes what a remover that died midway left (``<root>.gone-<random>``).
    """
    pattern = re.compile(rf"ccpipe-runner-{os.getuid()}-[0-9a-f]{{16}}({re.escape(GONE)}[0-9a-f]{{16}})?")
    try:
        names = [n for n in os.listdir(shm) if pattern.fullmatch(n)]
    except OSError:
        return []
    swept = []
    for name in names:
        root = shm / name
        with contextlib.suppress(OSError):  # another sweeper was quicker, or an entry is not ours to remove
            if root.is_symlink() or not root.is_dir():
                continue
            if GONE in name:
                remove_tree(root)
                swept.append(root)
            elif remove_root_if_unheld(root):
                swept.append(root)
    return swept


@dataclass(frozen=True)
class Workspace:
    """One launch's private directory and its parts."""

    path: Path
    kind: str
    """``tmpfs`` (RAM, /dev/shm) or ``disk`` (under the data directory)."""
    _held: list[int] = field(default_factory=list, compare=False, repr=False)
    """The descriptor of the shared lock on a tmpfs root while the workspace lives (empty once removed)."""

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
        """Remove everything, read-only directories of the image included; then the tmpfs root if nobody holds it."""
        remove_tree(self.path)
        while self._held:
            os.close(self._held.pop())
            remove_root_if_unheld(self.path.parent)


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
    mode = 0o711 if traversable else 0o700
    held: list[int] = []
    base = data_dir / "runner" / "work"
    kind = "disk"
    if shm.is_dir() and _is_tmpfs(shm):
        try:
            if shutil.disk_usage(shm).free > needed_bytes + (64 << 20):
                sweep_stale_roots(shm)
                base, kind = shm_root(data_dir, shm), "tmpfs"
                held.append(_hold_root(base, mode))
        except OSError:
            base, kind = data_dir / "runner" / "work", "disk"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chmod(base, mode)
        path = base / launch_id
        if path.exists():
            remove_tree(path)  # a crashed earlier attempt of the same launch
        path.mkdir(mode=0o700)
        os.chmod(path, mode)
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return Workspace(path, kind, held)
