"""Blob uploads: cross-repository mount, monolithic upload and chunked upload.

Protocol (OCI distribution spec, "Pushing blobs"):

* mount: ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<other>`` → 201 if mounted,
  202 with an upload session otherwise (which we cancel);
* monolithic: ``POST …/uploads/`` → 202 + ``Location``; ``PUT <location>?digest=<d>`` with the
  whole body → 201;
* chunked: ``POST``, then ``PATCH <location>`` per chunk with ``Content-Range: <start>-<end>``
  (inclusive, no unit), each answer giving the next ``Location``; then ``PUT …?digest=`` with
  no body.

The bytes are hashed as they are read: a source that does not match its digest is refused
before the final PUT, and its upload session is cancelled. An upload is retried as a whole
(a new session): after a registry restart the old session's state is gone. Before a retry the
blob is looked up again, in case the last attempt's PUT landed but its answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import BinaryIO, Protocol

from yarl import URL

from ccpipe.oci.registry.errors import DigestMismatch, LayoutInvalid, RegistryError, RegistryRequestRejected
from ccpipe.oci.registry.transport import RegistryStats, Transport, push_scope

OCTET = "application/octet-stream"


class UploadClient(Protocol):
    """What an upload needs of the client (:class:`~ccpipe.oci.registry.client.RegistryClient` is one).

    A protocol rather than the client class, so this module does not import the module that
    imports it.
    """

    transport: Transport
    stats: RegistryStats
    chunk_size: int

    def where(self, repository: str, target: str | None = None) -> str:
        """``registry R, repository P[, T]`` for messages; refuses malformed names."""
        ...

    def remember(self, repository: str, digest: str) -> None:
        """Note that ``repository`` holds blob ``digest``."""
        ...

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of blob ``digest`` in ``repository``, or None if it is absent."""
        ...


def _location(client: UploadClient, headers: dict[str, str], where: str) -> URL:
    loc = headers.get("Location")
    if not loc:
        raise RegistryRequestRejected(f"{where}: registry opened an upload without a Location header")
    return client.transport.url(loc)


async def _cancel(client: UploadClient, url: URL, repository: str, where: str) -> None:
    """Best-effort ``DELETE`` of an upload session (registries expire them anyway)."""
    with contextlib.suppress(RegistryError):
        await client.transport.call(
            "DELETE", url, scope=push_scope(repository), where=where, kind="upload", ok=(204, 200, 404), retry=False
        )


async def mount(client: UploadClient, repository: str, digest: str, from_repository: str) -> bool:
    """Try a cross-repository mount; True if the registry mounted the blob (201)."""
    client.where(from_repository)  # refuses a malformed source name
    where = client.where(repository, f"{digest} (mount from {from_repository})")
    url = client.transport.url(f"/v2/{repository}/blobs/uploads/").with_query(mount=digest, **{"from": from_repository})
    scope = f"{push_scope(repository)} repository:{from_repository}:pull"
    reply = await client.transport.call("POST", url, scope=scope, where=where, kind="upload", ok=(201, 202))
    if reply.status == 201:
        client.remember(repository, digest)
        return True
    if reply.headers.get("Location"):
        await _cancel(client, _location(client, reply.headers, where), repository, where)
    return False


async def upload(client: UploadClient, repository: str, digest: str, size: int, source: bytes | Path) -> None:
    """Upload ``source`` as blob ``digest`` of ``size`` bytes, retrying the whole upload.

    Raises :class:`DigestMismatch` if ``source`` does not hash to ``digest`` (or has another
    size), :class:`LayoutInvalid` if the file cannot be read, and ``RegistryError``s.
    """
    where = client.where(repository, digest)
    if isinstance(source, bytes) and (
        len(source) != size or hashlib.sha256(source).hexdigest() != digest.removeprefix("sha256:")
    ):
        raise DigestMismatch(f"{where}: the bytes to upload do not hash to the digest; nothing was sent")
    attempts = 0

    async def once() -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1 and await client.blob_size(repository, digest) is not None:
            return  # the previous attempt completed; only its answer was lost
        await _upload_once(client, repository, digest, size, source, where)

    await client.transport.retrying(once)
    client.remember(repository, digest)


async def _upload_once(
    client: UploadClient, repository: str, digest: str, size: int, source: bytes | Path, where: str
) -> None:
    scope = push_scope(repository)
    tr = client.transport
    start = await tr.call(
        "POST",
        tr.url(f"/v2/{repository}/blobs/uploads/"),
        scope=scope,
        where=where,
        kind="upload",
        ok=(202,),
        headers={"Content-Length": "0"},
        retry=False,
    )
    loc = _location(client, start.headers, where)
    if isinstance(source, bytes) or size <= client.chunk_size:
        data = source if isinstance(source, bytes) else await asyncio.to_thread(_read_all, source, size, where)
        if hashlib.sha256(data).hexdigest() != digest.removeprefix("sha256:") or len(data) != size:
            await _cancel(client, loc, repository, where)
            what = "the bytes" if isinstance(source, bytes) else str(source)
            raise DigestMismatch(f"{where}: {what} do not hash to the digest; upload cancelled")
        await tr.call(
            "PUT",
            loc.update_query(digest=digest),
            scope=scope,
            where=where,
            kind="upload",
            ok=(201,),
            headers={"Content-Type": OCTET},
            data=data,
            retry=False,
        )
        client.stats.chunks_uploaded += 1
        client.stats.bytes_uploaded += len(data)
        return
    h = hashlib.sha256()
    offset = 0
    try:
        fh: BinaryIO = source.open("rb")
    except OSError as exc:
        raise LayoutInvalid(f"{where}: cannot read {source}: {exc}") from exc
    with fh:
        while True:
            chunk = await asyncio.to_thread(fh.read, client.chunk_size)
            if not chunk:
                break
            h.update(chunk)
            end = offset + len(chunk) - 1
            reply = await tr.call(
                "PATCH",
                loc,
                scope=scope,
                where=where,
                kind="upload",
                ok=(202,),
                retry=False,
                data=chunk,
                headers={"Content-Type": OCTET, "Content-Range": f"{offset}-{end}"},
            )
            loc = _location(client, reply.headers, where)
            offset = end + 1
            client.stats.chunks_uploaded += 1
            client.stats.bytes_uploaded += len(chunk)
    if offset != size or "sha256:" + h.hexdigest() != digest:
        await _cancel(client, loc, repository, where)
        raise DigestMismatch(f"{where}: {source} ({offset} bytes) does not hash to the digest; upload cancelled")
    await tr.call(
        "PUT",
        loc.update_query(digest=digest),
        scope=scope,
        where=where,
        kind="upload",
        ok=(201,),
        headers={"Content-Length": "0"},
        retry=False,
    )


def _read_all(path: Path, size: int, where: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size + 1)  # one byte more reveals a file longer than its descriptor
    except OSError as exc:
        raise LayoutInvalid(f"{where}: cannot read {path}: {exc}") from exc
