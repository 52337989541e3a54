"""Parsed files and directory listings, re-read only when ``stat`` says they changed.

The reference value and policy stores live in a directory that several processes share (KBS
workers, the sign stage); each writes by atomic rename, so a write always gives the file a new
inode and changes its directory. A cached parse is reused while the file's signature — device,
inode, size, mtime and ctime in nanoseconds — is the one it was read with.

Timestamps are coarse (a kernel tick, or a second on some filesystems), so a file changed twice
within one tick could keep its signature (with a recycled inode even across a rename). As git
does for its index ("racy git"), a parse is trusted only if the file was last changed more than
:data:`RACY_NS` before it was read; until then every look-up re-reads it. A later change then
always carries a later timestamp, so the cache never serves what another process replaced.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
RACY_NS = 2_000_000_000
"""A change younger than this (2 s, above a 1-second filesystem granularity) is not trusted."""
DEFAULT_ENTRIES = 512
"""Entries per cache: the hot set (global values and policies, the workloads in flight) with room to spare;
per-workload files are read while their workload launches, so a long run must not keep them all."""

Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    """What identifies one version of a file or directory."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_now_ns = time.time_ns  # the filesystem's clock (a seam for tests)


def _settled(st: os.stat_result) -> bool:
    """Whether a version is old enough that a later change must carry another timestamp."""
    return _now_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS


@dataclass(frozen=True)
class _Entry(Generic[T]):
    sig: Signature
    settled: bool
    value: T


class _Lru(Generic[T]):
    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._size = size

    def get(self, key: str) -> _Entry[T] | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, entry: _Entry[T]) -> None:
        with self._lock:
            self._items[key] = entry
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


class FileCache(Generic[T]):
    """``parse(bytes)`` of regular files, reused while each file is unchanged."""

    def __init__(self, parse: Callable[[str, bytes], T], *, size: int = DEFAULT_ENTRIES) -> None:
        """Cache ``parse(path, content)`` for at most ``size`` files."""
        self._parse = parse
        self._lru: _Lru[T] = _Lru(size)

    def get(self, path: str) -> T | None:
        """The parsed content of ``path``; None if it is not a regular file.

        Raises ``OSError`` when it exists but cannot be read, and whatever ``parse`` raises
        (neither is cached).
        """
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._lru.drop(path)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        hit = self._lru.get(path)
        if hit is not None and hit.settled and hit.sig == signature(st):
            return hit.value
        with open(path, "rb") as f:
            # The signature of what is actually read (a rename may have happened since stat).
            st = os.fstat(f.fileno())
            data = f.read()
        value = self._parse(path, data)
        self._lru.put(path, _Entry(signature(st), _settled(st), value))
        return value


class ListingCache:
    """Sorted stems of ``*<suffix>`` entries of directories (no dot files, as ``glob``)."""

    def __init__(self, suffix: str, *, size: int = DEFAULT_ENTRIES) -> None:
        """List names ending in ``suffix``, for at most ``size`` directories."""
        self._suffix = suffix
        self._lru: _Lru[tuple[str, ...]] = _Lru(size)

    def stems(self, directory: str) -> list[str]:
        """The stems in ``directory``; [] if it does not exist. Raises ``OSError`` otherwise."""
        try:
            st = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            self._lru.drop(directory)
            return []
        if not stat.S_ISDIR(st.st_mode):
            return []
        hit = self._lru.get(directory)
        if hit is not None and hit.settled and hit.sig == signature(st):
            return list(hit.value)
        # stat before listing: a change during the listing shows up as a new signature next time.
        n = len(self._suffix)
        # Sorted by file name (as sorted(glob(...)) is), then stripped of the suffix.
        names = sorted(e for e in os.listdir(directory) if e.endswith(self._suffix) and not e.startswith("."))
        stems = tuple(e[:-n] for e in names)
        self._lru.put(directory, _Entry(signature(st), _settled(st), stems))
        return list(stems)


__all__ = ["RACY_NS", "FileCache", "ListingCache", "Signature", "signature"]
