"""The OCI distribution client: blobs and manifests of one registry, over HTTP or HTTPS.

What the client promises:

* every byte it returns or writes was checked against the digest that named it; a blob or
  manifest that does not hash to the requested digest raises :class:`DigestMismatch` and
  nothing is kept;
* :meth:`RegistryClient.push_blob` never uploads a blob the repository already has (HEAD
  first), mounts it from another repository when it knows one that holds it, and after an
  upload checks with HEAD that the registry really holds it;
* large blobs are streamed from files in ``chunk_size`` pieces, so memory stays flat;
* transient failures are retried (see :mod:`.transport`); a blob upload is retried as a whole,
  because a restarted registry has forgotten the upload session.

Uploads are in :mod:`._upload`; this module holds the client and the read side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp
from yarl import URL

from ccpipe.oci.registry import _upload
from ccpipe.oci.registry.auth import Credentials
from ccpipe.oci.registry.errors import BlobMissing, DigestMismatch, ManifestInvalid, ReferenceInvalid
from ccpipe.oci.registry.manifests import ACCEPT, ALGORITHMS, MAX_MANIFEST, check_reference, check_repository
from ccpipe.oci.registry.transport import (
    RegistryStats,
    RetryPolicy,
    Transport,
    error_for,
    pull_scope,
    push_scope,
    ssl_context,
)
from ccpipe.schemas.digest import check_digest, is_digest, sha256_digest
from ccpipe.schemas.json_input import load_json

MiB = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched: its exact bytes, media type and (verified) digest."""

    body: bytes
    media_type: str
    digest: str


class RegistryClient:
    """Async client of one OCI registry. Use as ``async with RegistryClient(...) as client``.

    ``registry`` is ``host[:port]`` (HTTPS unless ``plain_http``) or a full ``http(s)://`` URL.
    ``ca_file`` adds a CA (PEM) to the trusted roots; ``credentials`` are used for Basic auth
    or to obtain Bearer tokens. Raises :class:`RegistryTlsError` if the CA file is unusable.
    """

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        ca_file: Path | None = None,
        credentials: Credentials | None = None,
        chunk_size: int = 8 * MiB,
        retry: RetryPolicy | None = None,
        timeout: float = 300.0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        base = URL(registry) if "://" in registry else URL(f"{'http' if plain_http else 'https'}://{registry}")
        self.base = base.with_path("/")
        self.registry = self.base.authority
        self.chunk_size = chunk_size
        self.stats = RegistryStats()
        ctx = ssl_context(ca_file) if self.base.scheme == "https" else None
        self.transport = Transport(
            self.base,
            credentials=credentials,
            ssl_ctx=ctx,
            retry=retry or RetryPolicy(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout),
            stats=self.stats,
        )
        # repositories where this client saw or put each blob: mount sources for later pushes
        self._known: dict[str, set[str]] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.transport.close()

    def where(self, repository: str, target: str | None = None) -> str:
        """``registry R, repository P[, T]`` for error messages.

        Every request names its repository here first, so this is where a malformed name (one
        that could change the URL's path) is refused: raises :class:`ReferenceInvalid`.
        """
        try:
            check_repository(repository)
            if target is not None and target.startswith("sha256:"):
                check_digest(target.split(" ", 1)[0], ALGORITHMS)
            if target is not None and target.startswith("manifest "):
                check_reference(target.removeprefix("manifest "))
        except ValueError as exc:
            raise ReferenceInvalid(f"registry {self.registry}: {exc}") from exc
        text = f"registry {self.registry}, repository {repository}"
        return f"{text}, {target}" if target else text

    def remember(self, repository: str, digest: str) -> None:
        """Note that ``repository`` holds blob ``digest`` (a mount source for later pushes)."""
        self._known.setdefault(digest, set()).add(repository)

    async def ping(self) -> None:
        """``GET /v2/``: check the registry answers (and authenticate). Raises ``RegistryError``."""
        await self.transport.call(
            "GET", self.transport.url("/v2/"), scope="", where=f"registry {self.registry}", kind="ping"
        )

    # --- blobs --------------------------------------------------------------------------------

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of blob ``digest`` in ``repository`` (HEAD), or None if it is absent."""
        reply = await self.transport.call(
            "HEAD",
            self.transport.url(f"/v2/{repository}/blobs/{digest}"),
            scope=pull_scope(repository),
            where=self.where(repository, digest),
            kind="blob",
            ok=(200, 404),
        )
        if reply.status == 404:
            return None
        self.remember(repository, digest)
        length = reply.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else -1

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to mount ``digest`` from ``from_repository``; True if it did (201)."""
        return await _upload.mount(self, repository, digest, from_repository)

    async def push_blob(
        self, repository: str, digest: str, size: int, source: bytes | Path, *, mount_from: tuple[str, ...] = ()
    ) -> str:
        """Make ``repository`` hold blob ``digest``; returns ``present``, ``mounted`` or ``uploaded``.

        HEAD first; then a cross-repository mount from ``mount_from`` or a repository this
        client saw holding it; then an upload (monolithic up to ``chunk_size``, chunked above)
        verified by HEAD. Raises :class:`DigestMismatch` if ``source`` does not hash to
        ``digest``, :class:`BlobMissing` if the registry does not hold it after the upload, and
        the other ``RegistryError``s for refusals and (after retries) transient failures.
        """
        if await self.blob_size(repository, digest) is not None:
            self.stats.blobs_present += 1
            return "present"
        sources = [*mount_from, *sorted(self._known.get(digest, set()))]
        for other in dict.fromkeys(s for s in sources if s != repository):
            if await self.mount_blob(repository, digest, other):
                await self._check_present(repository, digest, size)
                self.stats.blobs_mounted += 1
                return "mounted"
        await _upload.upload(self, repository, digest, size, source)
        await self._check_present(repository, digest, size)
        self.stats.blobs_uploaded += 1
        self.stats.uploaded_digests.append(digest)
        return "uploaded"

    async def _check_present(self, repository: str, digest: str, size: int) -> None:
        have = await self.blob_size(repository, digest)
        if have is None:
            raise BlobMissing(f"{self.where(repository, digest)}: blob is absent right after it was pushed")
        if have not in (-1, size):
            raise BlobMissing(f"{self.where(repository, digest)}: registry holds {have} bytes, expected {size}")

    async def get_blob(self, repository: str, digest: str, *, max_size: int = 16 * MiB) -> bytes:
        """Fetch a small blob into memory, verified against ``digest``.

        Raises :class:`BlobMissing` (404), :class:`DigestMismatch` (bytes do not match, or the
        blob is larger than ``max_size``) and the other ``RegistryError``s.
        """
        url = self.transport.url(f"/v2/{repository}/blobs/{digest}")
        where = self.where(repository, digest)

        async def once() -> bytes:
            async with self.transport.open("GET", url, scope=pull_scope(repository), where=where) as resp:
                if resp.status != 200:
                    raise error_for(resp.status, dict(resp.headers), await resp.read(), where, "blob")
                data = bytearray()
                async for piece in resp.content.iter_chunked(256 * 1024):
                    data += piece
                    if len(data) > max_size:
                        raise DigestMismatch(f"{where}: blob is larger than {max_size} bytes; refused")
                return bytes(data)

        data = await self.transport.retrying(once)
        if sha256_digest(data) != digest:
            raise DigestMismatch(f"{where}: blob bytes hash to {sha256_digest(data)}; refused")
        self.stats.blobs_downloaded += 1
        self.stats.bytes_downloaded += len(data)
        return data

    async def download_blob(self, repository: str, digest: str, dest: Path, *, size: int | None = None) -> int:
        """Stream blob ``digest`` into ``dest`` (via a temporary file), verified; returns its size.

        ``dest`` appears only if the bytes hash to ``digest`` (and have ``size`` bytes when
        given). Raises :class:`DigestMismatch`, :class:`BlobMissing` and the other ``RegistryError``s.
        """
        url = self.transport.url(f"/v2/{repository}/blobs/{digest}")
        where = self.where(repository, digest)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")

        async def once() -> int:
            h, n = hashlib.sha256(), 0
            async with self.transport.open("GET", url, scope=pull_scope(repository), where=where) as resp:
                if resp.status != 200:
                    raise error_for(resp.status, dict(resp.headers), await resp.read(), where, "blob")
                with tmp.open("wb") as out:
                    async for piece in resp.content.iter_chunked(1024 * 1024):
                        n += len(piece)
                        if size is not None and n > size:
                            raise DigestMismatch(f"{where}: registry sent more than the {size} bytes expected")
                        h.update(piece)
                        await asyncio.to_thread(out.write, piece)
            if "sha256:" + h.hexdigest() != digest or (size is not None and n != size):
                raise DigestMismatch(f"{where}: blob bytes hash to sha256:{h.hexdigest()} ({n} bytes); refused")
            return n

        try:
            n = await self.transport.retrying(once)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        self.stats.blobs_downloaded += 1
        self.stats.bytes_downloaded += n
        return n

    # --- manifests ----------------------------------------------------------------------------

    async def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest.

        This is the low-level call: it does not check that the blobs exist (use
        :func:`push_layout`, which always pushes and verifies blobs first). Raises
        :class:`DigestMismatch` if ``reference`` is a digest other than the body's, or the
        registry reports another digest; other ``RegistryError``s for refusals.
        """
        digest = sha256_digest(body)
        where = self.where(repository, f"manifest {reference}")
        if is_digest(reference, ALGORITHMS) and reference != digest:
            raise DigestMismatch(f"{where}: body hashes to {digest}, not to the reference")
        reply = await self.transport.call(
            "PUT",
            self.transport.url(f"/v2/{repository}/manifests/{reference}"),
            scope=push_scope(repository),
            where=where,
            kind="manifest",
            ok=(201, 200),
            headers={"Content-Type": media_type},
            data=body,
        )
        said = reply.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise DigestMismatch(f"{where}: registry stored {said}, but the body hashes to {digest}")
        self.stats.manifests_pushed += 1
        return digest

    async def get_manifest(self, repository: str, reference: str, *, accept: str = ACCEPT) -> Manifest:
        """Fetch a manifest or index by tag or digest, verified.

        By digest, the body must hash to it; by tag, it must hash to the
        ``Docker-Content-Digest`` the registry announces. Raises :class:`ManifestNotFound`,
        :class:`DigestMismatch`, :class:`ManifestInvalid` (too large) and other ``RegistryError``s.
        """
        where = self.where(repository, f"manifest {reference}")
        reply = await self.transport.call(
            "GET",
            self.transport.url(f"/v2/{repository}/manifests/{reference}"),
            scope=pull_scope(repository),
            where=where,
            kind="manifest",
            headers={"Accept": accept},
        )
        if len(reply.body) > MAX_MANIFEST:
            raise ManifestInvalid(f"{where}: manifest is larger than {MAX_MANIFEST} bytes; refused")
        digest = sha256_digest(reply.body)
        if is_digest(reference, ALGORITHMS) and digest != reference:
            raise DigestMismatch(f"{where}: manifest bytes hash to {digest}; refused")
        said = reply.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise DigestMismatch(f"{where}: registry announced {said}, but the bytes hash to {digest}; refused")
        media_type = reply.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type:
            try:
                media_type = str(load_json(reply.body).get("mediaType", ""))
            except (ValueError, AttributeError):
                media_type = ""
        return Manifest(reply.body, media_type, digest)

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of the manifest under ``reference`` (HEAD), or None if there is none."""
        reply = await self.transport.call(
            "HEAD",
            self.transport.url(f"/v2/{repository}/manifests/{reference}"),
            scope=pull_scope(repository),
            where=self.where(repository, f"manifest {reference}"),
            kind="manifest",
            ok=(200, 404),
            headers={"Accept": ACCEPT},
        )
        if reply.status == 404:
            return None
        return reply.headers.get("Docker-Content-Digest") or (await self.get_manifest(repository, reference)).digest

    async def list_tags(self, repository: str) -> list[str]:
        """Tags of ``repository`` (one page, as distribution returns them); [] if it does not exist."""
        reply = await self.transport.call(
            "GET",
            self.transport.url(f"/v2/{repository}/tags/list"),
            scope=pull_scope(repository),
            where=self.where(repository, "tags"),
            kind="tags",
            ok=(200, 404),
        )
        if reply.status == 404:
            return []
        try:
            tags = load_json(reply.body).get("tags") or []
        except (ValueError, AttributeError) as exc:
            raise ManifestInvalid(f"{self.where(repository, 'tags')}: unreadable tag list") from exc
        return [t for t in tags if isinstance(t, str)]
