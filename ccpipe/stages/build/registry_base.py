"""Registry bases for the build stage: a :class:`~ccpipe.stages.build.base.blob_sources.FetchBlob` over deploy's client.

``[build] base = "HOST[:PORT]/REPO@sha256:…"`` is read through
:class:`ccpipe.oci.registry.RegistryClient` (the one home of registry I/O), only from the
registries the builder is allowed to reach (the pipeline's own registry by default): a
repository cannot make the build machine fetch from an arbitrary host. Every manifest and blob
is checked against its digest by the client and again by :mod:`ccpipe.stages.build.base.blob_sources`.

The build runs in a worker thread; :class:`RegistryFetch` hands each fetch to the event loop the
handler runs on and waits for it. Blobs are streamed to a temporary file and read back in
chunks, so a large base layer is never held in memory whole.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ccpipe.oci.registry import Credentials, RegistryClient
from ccpipe.stages.build.errors import BaseForbidden

_CHUNK = 1 << 20


class RegistryFetch:
    """A ``FetchBlob`` for bases in the ``allowed`` registries (``host[:port]``), used from worker threads."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        allowed: Iterable[str],
        *,
        plain_http: bool = True,
        ca_file: Path | None = None,
        credentials: Credentials | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.loop = loop
        self.allowed = frozenset(allowed)
        self.plain_http = plain_http
        self.ca_file = ca_file
        self.credentials = credentials
        self.work_dir = work_dir

    def __call__(self, repository: str, digest: str, /, *, manifest: bool) -> bytes | Iterable[bytes]:
        """The manifest bytes, or the blob in chunks. Raises :class:`BaseForbidden` for another registry."""
        host, _, repo = repository.partition("/")
        if host not in self.allowed or not repo:
            allowed = ", ".join(sorted(self.allowed)) or "none"
            raise BaseForbidden(
                f"base {repository}@{digest} is in registry {host!r}, which this builder may not read "
                f"(allowed: {allowed})",
                hint="push the base to the pipeline's registry, or import it as an oci: layout under the bases dir",
            )
        if manifest:
            return asyncio.run_coroutine_threadsafe(self._manifest(host, repo, digest), self.loop).result()
        return self._blob(host, repo, digest)

    def _client(self, host: str) -> RegistryClient:
        return RegistryClient(host, plain_http=self.plain_http, ca_file=self.ca_file, credentials=self.credentials)

    async def _manifest(self, host: str, repo: str, digest: str) -> bytes:
        async with self._client(host) as client:
            return (await client.get_manifest(repo, digest)).body

    async def _download(self, host: str, repo: str, digest: str, dest: Path) -> None:
        async with self._client(host) as client:
            await client.download_blob(repo, digest, dest)

    def _blob(self, host: str, repo: str, digest: str) -> Iterator[bytes]:
        with tempfile.TemporaryDirectory(prefix="ccpipe-base-", dir=self.work_dir) as tmp:
            dest = Path(tmp) / "blob"
            asyncio.run_coroutine_threadsafe(self._download(host, repo, digest, dest), self.loop).result()
            with dest.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk
