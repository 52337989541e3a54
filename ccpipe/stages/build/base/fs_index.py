"""The base's file system as its layers leave it: which paths exist, as what, after whiteouts.

The image builder consults this index so that a copy never replaces a base directory's
metadata (``/tmp`` stays 1777) nor a base symlink (``/bin`` on a merged-/usr base stays a
symlink). Building it means decompressing every layer, which is most of what resolving a base
costs; :class:`BaseIndexCache` keeps the indexes of bases already checked.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import IO, cast

from zlib_ng import gzip_ng

from ccpipe.oci.documents import Descriptor
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.tar_stream import LAYER_READ_ERRORS, open_tar_stream, tar_members
from ccpipe.stages.build.errors import BaseImageError


class BaseFilesystem:
    """Which paths the base's layers create, after whiteouts, as kind + symlink target."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, ...], tuple[str, str]] = {}

    def copy(self) -> BaseFilesystem:
        """An independent copy (applying layers to it leaves this one as it is)."""
        twin = BaseFilesystem()
        twin.nodes = dict(self.nodes)
        return twin

    def apply(self, members: Iterable[tarfile.TarInfo]) -> None:
        """Apply one layer's entries, in order (whiteouts remove what lower layers made)."""
        for m in members:
            parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
            if not parts or ".." in parts:
                continue
            base = parts[-1]
            if base == ".wh..wh..opq":
                self._drop_children(parts[:-1])
                continue
            if base.startswith(".wh."):
                target = (*parts[:-1], base[4:])
                self.nodes.pop(target, None)
                self._drop_children(target)
                continue
            if m.isdir():
                self.nodes[parts] = ("dir", "")
            elif m.issym():
                self.nodes[parts] = ("symlink", m.linkname)
            else:
                if self.nodes.get(parts, ("", ""))[0] == "dir":
                    self._drop_children(parts)
                self.nodes[parts] = ("file", "")

    def _drop_children(self, parent: tuple[str, ...]) -> None:
        n = len(parent)
        for key in [k for k in self.nodes if len(k) > n and k[:n] == parent]:
            del self.nodes[key]

    def lookup(self, parts: list[str] | tuple[str, ...], *, follow_last: bool = False) -> str | None:
        """Kind of what is at ``parts`` ("dir", "symlink", "file") or ``None``.

        Symlinks in the parents are followed inside the image root, as a runtime extracting a
        layer would; the last component is followed only with ``follow_last``.
        """
        todo = list(parts)
        resolved: list[str] = []
        hops = 0
        kind = "dir"
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                kind = "dir"
                continue
            node = self.nodes.get((*resolved, name))
            if node is None:
                return None
            kind, link = node
            if kind == "symlink" and (todo or follow_last):
                hops += 1
                if hops > 40:
                    return None
                if link.startswith("/"):
                    resolved = []
                todo = link.split("/") + todo
                continue
            if todo and kind != "dir":
                return None
            resolved.append(name)
        return kind


_READ_ERRORS: tuple[type[Exception], ...] = (*LAYER_READ_ERRORS, OSError)
"""A malformed layer, or a blob that cannot be read."""


class _HashingReader:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def index_layer(layout: OciLayout, desc: Descriptor, fs: BaseFilesystem) -> str:
    """Read a layer's tar headers into ``fs``; returns the sha256 of the uncompressed tar (its diff_id)."""
    with layout.blob_path(desc.digest).open("rb") as raw:
        stream: IO[bytes] = raw
        if desc.media_type.endswith("+gzip"):
            stream = cast("IO[bytes]", gzip_ng.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
        reader = _HashingReader(stream)
        try:
            with open_tar_stream(reader) as tar:  # type: ignore[arg-type]
                fs.apply(tar_members(tar))
            while reader.read(1 << 20):
                pass
        except _READ_ERRORS as exc:
            raise BaseImageError(f"layer {desc.digest} is not a readable tar: {exc}") from exc
    return "sha256:" + reader.h.hexdigest()


class BaseIndexCache:
    """File-system indexes of bases whose layers were checked, keyed by image manifest digest.

    Sound because a manifest digest pins everything the index depends on: the config digest
    (hence the diff_ids) and each layer's compressed digest, which the layout checks whenever a
    layer is added. Once the layers of manifest ``M`` were seen to unpack to the config's
    diff_ids, they always will, so a second build on ``M`` needs no decompression. Bounded:
    the least recently used index goes once ``max_bases`` are held. Safe to share between
    threads (the build handler runs builds in worker threads); callers get their own copies.
    """

    def __init__(self, max_bases: int = 16) -> None:
        if max_bases < 1:
            raise ValueError("a base index cache holds at least one base")
        self.max_bases = max_bases
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, BaseFilesystem] = OrderedDict()

    def get(self, manifest_digest: str) -> BaseFilesystem | None:
        """A copy of the index of the base with this manifest, or ``None`` when it is not held."""
        with self._lock:
            fs = self._indexes.get(manifest_digest)
            if fs is None:
                return None
            self._indexes.move_to_end(manifest_digest)
            return fs.copy()

    def put(self, manifest_digest: str, fs: BaseFilesystem) -> None:
        """Keep (a copy of) the index of a base whose layers all matched their diff_ids."""
        with self._lock:
            self._indexes[manifest_digest] = fs.copy()
            self._indexes.move_to_end(manifest_digest)
            while len(self._indexes) > self.max_bases:
                self._indexes.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._indexes)
