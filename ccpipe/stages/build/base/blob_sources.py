"""Where a base's manifests, configs and layers are read from: a layout, a registry, an ``oci-archive``.

Every source checks what it reads against the digest that named it (a layout's blobs through
:class:`~ccpipe.oci.layout.OciLayout`); layer chunks are checked by the layout
they are copied into.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

from ccpipe.oci.documents import Descriptor
from ccpipe.oci.layout import OciLayout, check_blob_digest
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseNotFound


class FetchBlob(Protocol):
    """Reads content from a registry by digest (supplied by the registry client's owner).

    ``repository`` is ``REGISTRY/REPO`` as the recipe wrote it. With ``manifest=True`` the
    digest names a manifest or an index (the registry's ``/manifests/`` endpoint), otherwise a
    blob (``/blobs/``). Returns the content, whole or in chunks; the caller checks the digest.
    Raises :class:`ccpipe.schemas.errors.TransientError` for failures worth retrying.
    """

    def __call__(self, repository: str, digest: str, /, *, manifest: bool) -> bytes | Iterable[bytes]: ...


class BlobSource(Protocol):
    """Content by digest: whole documents (checked) and layers in chunks (checked by the reader)."""

    def read(self, digest: str, *, manifest: bool) -> bytes:
        """The manifest, index or config named ``digest``, checked against it."""
        ...

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        """The blob ``desc`` names, in chunks, unchecked."""
        ...


def _check(data: bytes, digest: str, what: str) -> bytes:
    """``data`` if it hashes to ``digest``, else :class:`BaseDigestMismatch` naming ``what``."""
    alg = check_blob_digest(digest)[0]
    if f"{alg}:{hashlib.new(alg, data).hexdigest()}" != digest:
        raise BaseDigestMismatch(what)
    return data


class LayoutSource:
    """Blobs of an OCI image layout directory."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout

    def read(self, digest: str, *, manifest: bool) -> bytes:
        """The blob, checked by the layout."""
        return self.layout.read_blob(digest)

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        """The blob in chunks, as stored."""
        return self.layout.iter_blob(desc.digest, verify=False)


class RegistrySource:
    """Blobs and manifests of one registry repository, through a :class:`FetchBlob`."""

    def __init__(self, fetch: FetchBlob, repository: str) -> None:
        self.fetch = fetch
        self.repository = repository

    def _chunks(self, digest: str, manifest: bool) -> Iterator[bytes]:
        got = self.fetch(self.repository, digest, manifest=manifest)
        if isinstance(got, bytes | bytearray):
            yield bytes(got)
        else:
            yield from got

    def read(self, digest: str, *, manifest: bool) -> bytes:
        """The content fetched for ``digest``, checked against it."""
        data = b"".join(self._chunks(digest, manifest))
        return _check(data, digest, f"{self.repository}: content fetched for {digest} does not match that digest")

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        """The blob as the registry sends it."""
        return self._chunks(desc.digest, False)


class ArchiveSource:
    """Blobs of an ``oci-archive`` (a tar of an OCI layout), read in place."""

    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self.tar = tar
        self.path = path
        self.members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}

    def open(self, name: str) -> IO[bytes]:
        """The archive member ``name`` (``./`` prefixes ignored); :class:`BaseNotFound` when absent."""
        member = self.members.get(name)
        f = self.tar.extractfile(member) if member else None
        if f is None:
            raise BaseNotFound(f"{self.path} has no {name}")
        return f

    def read(self, digest: str, *, manifest: bool) -> bytes:
        """The blob ``blobs/ALG/HEX``, checked against ``digest``."""
        alg, hexpart = check_blob_digest(digest)
        data = self.open(f"blobs/{alg}/{hexpart}").read()
        return _check(data, digest, f"{self.path}: blob {digest} does not match its digest")

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        """The blob in 1 MiB chunks, unchecked."""
        alg, hexpart = check_blob_digest(desc.digest)
        f = self.open(f"blobs/{alg}/{hexpart}")
        while chunk := f.read(1 << 20):
            yield chunk
