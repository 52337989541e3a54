"""Helpers of the runner tests: tar layers built in memory, a snapshot of a directory tree."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

Entry = tuple[Any, ...]
"""``("file", name, data[, mode])``, ``("dir", name[, mode])``, ``("sym", name, target)``,
``("link", name, target)``, ``("chr"|"blk"|"fifo", name)``."""


def tar_bytes(entries: list[Entry], *, gz: bool = False) -> bytes:
    """A tar stream (optionally gzip) holding ``entries`` in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            kind, name = entry[0], entry[1]
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = b""
            if kind == "file":
                data = entry[2]
                info.size = len(data)
                info.mode = entry[3] if len(entry) > 3 else 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = entry[2] if len(entry) > 2 else 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = entry[2]
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = entry[2]
            elif kind in ("chr", "blk", "fifo"):
                info.type = {"chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                info.devmajor, info.devminor = 1, 3
            else:
                raise ValueError(kind)
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def snapshot(top: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under ``top`` (not following links): kind, mode and content or link target."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = ("sym", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, "")
            else:
                out[rel] = ("file", st.st_mode & 0o7777, p.read_bytes().hex()[:64])
    return out
