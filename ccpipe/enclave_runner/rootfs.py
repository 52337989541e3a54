"""An image root directory reached only through file descriptors, never through host paths.

Every path is resolved one component at a time from a descriptor of the root, opening each
directory with ``O_NOFOLLOW``: a symlink met on the way is read (never followed by the kernel)
and its target resolved the same way — absolute targets from the root, as inside the sandbox —
and any step above the root is refused. The unpacker (:mod:`ccpipe.enclave_runner.unpack`) and the
sandbox (reading the image's ``/etc/passwd``, making its workdir) use it.

Standard library only.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from ccpipe.enclave_runner.errors import RunnerError, UnpackError, UnsafeLayerEntry

MiB = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RootDir:
    """The root directory, reached only through file descriptors (see the module docstring)."""

    def __init__(self, root: Path, *, max_symlink_hops: int = 40) -> None:
        self.fd = os.open(root, DIR_FLAGS)
        self.max_symlink_hops = max_symlink_hops

    def close(self) -> None:
        os.close(self.fd)

    def walk(self, parts: Sequence[str], *, create: bool, where: str) -> tuple[int, list[str]] | None:
        """An fd of the directory ``parts`` names (and its physical path below the root), or None if missing.

        Symlinks are read and resolved inside the root; a step above the root, a loop or a
        non-directory on the way raises :class:`UnsafeLayerEntry` / :class:`UnpackError`.
        The caller closes the returned fd.
        """
        fds = [os.dup(self.fd)]
        names: list[str] = []
        pending = list(reversed(parts))
        hops = 0
        try:
            while pending:
                comp = pending.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if len(fds) == 1:
                        raise UnsafeLayerEntry(f"{where}: resolves to a path outside the root")
                    os.close(fds.pop())
                    names.pop()
                    continue
                cur = fds[-1]
                try:
                    st = os.lstat(comp, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        return None
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    st = os.lstat(comp, dir_fd=cur)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > self.max_symlink_hops:
                        raise UnsafeLayerEntry(f"{where}: too many levels of symbolic links")
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        while len(fds) > 1:
                            os.close(fds.pop())
                        names.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise UnpackError(f"{where}: {comp!r} on the way is not a directory")
                fds.append(os.open(comp, DIR_FLAGS, dir_fd=cur))
                names.append(comp)
            return fds.pop(), names
        finally:
            for fd in fds:
                os.close(fd)


def remove_entry(parent: int, name: str) -> None:
    """Remove ``name`` in ``parent`` without following links (a directory with its subtree)."""
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)  # fd-based and symlink-safe since Python 3.11
    else:
        os.unlink(name, dir_fd=parent)


def read_in_root(root: Path, path: str, *, max_bytes: int = MiB) -> bytes | None:
    """The content of the regular file ``path`` inside ``root`` (links resolved inside it), or None.

    None when it is missing, not a regular file, larger than ``max_bytes`` or outside the root.
    Used for the image's ``/etc/passwd`` and ``/etc/group``, which may be hostile links.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    rootd = RootDir(root)
    try:
        for _ in range(rootd.max_symlink_hops):
            if not parts:
                return None
            found = rootd.walk(parts[:-1], create=False, where=path)
            if found is None:
                return None
            parent, names = found
            try:
                st = os.lstat(parts[-1], dir_fd=parent)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(parts[-1], dir_fd=parent)
                    parts = target.split("/") if target.startswith("/") else [*names, *target.split("/")]
                    parts = [p for p in parts if p not in ("", ".")]
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                    return None
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                with os.fdopen(fd, "rb") as fh:
                    return fh.read(max_bytes)
            finally:
                os.close(parent)
        return None
    except (OSError, RunnerError):
        return None
    finally:
        rootd.close()


def make_dirs_in_root(root: Path, path: str) -> None:
    """Create the directory ``path`` inside ``root`` (links resolved inside it), as ``mkdir -p``.

    Raises :class:`UnsafeLayerEntry` if the path resolves outside the root and
    :class:`UnpackError` if a component is not a directory.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    rootd = RootDir(root)
    try:
        found = rootd.walk(parts, create=True, where=path)
        if found is not None:
            os.close(found[0])
    finally:
        rootd.close()


def remove_tree(path: Path) -> None:
    """Remove an unpacked root even where the image made directories read-only.

    Directories are opened up (0700) top-down before the removal; links are never followed.
    """
    if not path.is_symlink() and path.is_dir():
        os.chmod(path, 0o700)
        # top-down: each directory is made listable before os.walk descends into it
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


__all__ = ["DIR_FLAGS", "RootDir", "make_dirs_in_root", "read_in_root", "remove_entry", "remove_tree"]
