"""Path handling that never leaves a root directory, whatever symlinks the tree holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ccpipe.stages.build.errors import PathEscape, SymlinkEscape


def split_relative(path: str, what: str) -> list[str]:
    """Components of a relative '/'-separated path; refuses absolute paths, '..' and NUL.

    Empty and '.' components are dropped, so ``"app/./x/"`` gives ``["app", "x"]``.
    """
    if "\x00" in path:
        raise PathEscape(f"{what} {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise PathEscape(f"{what} {path!r} must be relative")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(f"{what} {path!r} contains '..'")
    return parts


def split_absolute(path: str, what: str) -> list[str]:
    """Components of an absolute image path; refuses relative paths, '..' and NUL."""
    if not path.startswith("/"):
        raise PathEscape(f"{what} {path!r} must be absolute")
    return split_relative(path.lstrip("/"), what)


def is_within(root: Path, path: Path) -> bool:
    """True when ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or root in path.parents


def resolve_beneath(root: Path, rel: str, what: str, *, follow_last: bool) -> Path:
    """``root/rel`` with symlinks in it resolved, refusing any resolution that leaves ``root``.

    With ``follow_last=False`` the final component is not followed (a symlink stays a symlink),
    but every directory above it must still resolve inside ``root``.
    """
    root = root.resolve()
    parts = split_relative(rel, what)
    if not parts:
        return root
    parent = root.joinpath(*parts[:-1]).resolve()
    if not is_within(root, parent):
        raise SymlinkEscape(f"{what} {rel!r} leads outside the repository through a symlink")
    target = parent / parts[-1]
    if follow_last:
        resolved = target.resolve()
        if not is_within(root, resolved):
            raise SymlinkEscape(f"{what} {rel!r} is a symlink that leads outside the repository")
        return resolved
    return target


def read_file_beneath(root: Path, rel: str, what: str, *, max_size: int) -> bytes:
    """Read a regular file below ``root`` without following any symlink on the way.

    Reads at most ``max_size + 1`` bytes: the caller refuses a longer result as too large,
    with its own words, without the whole file in memory.
    """
    parts = split_relative(rel, what)
    if not parts:
        raise PathEscape(f"{what} {rel!r} names no file")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = nxt
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise PathEscape(f"{what} {rel!r} is not a regular file")
        return f.read(max_size + 1)


def image_path(parts: list[str]) -> str:
    """Join components into the layer path form (no leading '/')."""
    return "/".join(parts)
