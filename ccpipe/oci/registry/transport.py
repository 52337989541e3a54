"""HTTP transport of the registry client: one aiohttp session, auth, retries, error mapping.

Every request goes through :meth:`Transport.open`, which adds the ``Authorization`` header,
answers a 401 challenge once, and turns aiohttp's exceptions into the ``RegistryError``
family. :meth:`Transport.retrying` runs an operation under the retry policy: only
:class:`RegistryTransientError` (connection failures, 5xx, 429) is retried, with jittered
exponential backoff or the server's ``Retry-After``; after the last try that error propagates
unchanged. The unit of retry is chosen by the caller: a whole blob upload is retried as one,
because a registry that restarted has forgotten the upload session.

Imports nothing of the project but ``ccpipe.oci.registry.errors`` and ``.auth``.
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential
from yarl import URL

from ccpipe.oci.registry.auth import Authenticator, Credentials
from ccpipe.oci.registry.errors import (
    BlobMissing,
    DigestMismatch,
    ManifestBlobsCollected,
    ManifestNotFound,
    RegistryAuthError,
    RegistryDenied,
    RegistryError,
    RegistryRateLimited,
    RegistryRequestRejected,
    RegistryServerError,
    RegistryTlsError,
    RegistryTransientError,
    RegistryUnavailable,
)
from ccpipe.schemas.json_input import load_json

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: ``attempts`` tries in all, jittered backoff."""

    attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 5.0
    #: a longer ``Retry-After`` than this is capped, so one server cannot stall the stage
    max_retry_after: float = 30.0


@dataclass
class RegistryStats:
    """What the client did; tests and logs read it (e.g. "the second push uploaded nothing")."""

    requests: int = 0
    retries: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_uploaded: int = 0
    chunks_uploaded: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    blobs_downloaded: int = 0
    bytes_downloaded: int = 0
    uploaded_digests: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reply:
    """A fully read response."""

    status: int
    headers: dict[str, str]
    body: bytes


def pull_scope(repository: str) -> str:
    """Token scope for reading ``repository``."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """Token scope for writing ``repository``."""
    return f"repository:{repository}:pull,push"


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client TLS context; with ``ca_file``, trusting that CA (PEM) in addition.

    Raises :class:`RegistryTlsError` if the CA file cannot be read.
    """
    ctx = ssl.create_default_context()
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise RegistryTlsError(f"cannot load the CA file {ca_file}: {exc}") from exc
    return ctx


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_codes(body: bytes) -> str:
    """The distribution ``errors[]`` of a response body as ``CODE: message; …`` (or '')."""
    try:
        doc = load_json(body)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs or [] if isinstance(e, dict))
    except (ValueError, UnicodeDecodeError):
        return ""


def error_for(status: int, headers: dict[str, str], body: bytes, where: str, kind: str) -> RegistryError:
    """Map a non-success answer to the error class; ``where`` names registry, repository and digest."""
    detail = _error_codes(body)
    said = f" ({detail})" if detail else ""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RegistryRateLimited(f"{where}: registry answered 429 Too Many Requests{said}", retry_after=retry_after)
    if status >= 500:
        return RegistryServerError(f"{where}: registry answered {status}{said}", retry_after=retry_after)
    if status == 401:
        return RegistryAuthError(f"{where}: registry refused the credentials (401){said}")
    if status == 403:
        return RegistryDenied(f"{where}: access denied (403){said}")
    if status == 404 and kind == "blob":
        return BlobMissing(f"{where}: blob not found (404){said}")
    if status == 404 and kind == "manifest":
        return ManifestNotFound(f"{where}: manifest not found (404){said}")
    if status == 400 and "MANIFEST_BLOB_UNKNOWN" in detail and kind == "manifest":
        return ManifestBlobsCollected(f"{where}: the registry no longer holds a blob of this manifest{said}",
                                      retry_after=retry_after)
    if status == 400 and "DIGEST_INVALID" in detail:
        return DigestMismatch(f"{where}: the registry says the uploaded bytes do not match the digest{said}")
    return RegistryRequestRejected(f"{where}: registry answered {status}{said}")


@contextlib.contextmanager
def io_errors(where: str) -> Any:
    """Turn aiohttp/OS failures inside the block into ``RegistryError``s naming ``where``."""
    try:
        yield
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise RegistryTlsError(f"{where}: TLS failed: {exc}") from exc
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise RegistryUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc


class Transport:
    """One registry endpoint: base URL, session, authentication, retry policy and stats."""

    def __init__(
        self,
        base: URL,
        *,
        credentials: Credentials | None,
        ssl_ctx: ssl.SSLContext | None,
        retry: RetryPolicy,
        timeout: aiohttp.ClientTimeout,
        stats: RegistryStats,
    ) -> None:
        self.base = base
        self.name = base.authority
        self.retry = retry
        self.stats = stats
        self._ssl: ssl.SSLContext | bool = ssl_ctx if ssl_ctx is not None else True
        self._auth = Authenticator(credentials, self.name)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use (it must be created inside the running loop)."""
        if self._session is None or self._session.closed:
            # no automatic decompression: digests are over the bytes as stored
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> URL:
        """``path`` (``/v2/…``) or a ``Location`` value resolved against the registry."""
        return self.base.join(URL(path))

    async def _fetch_token(self, realm: str, query: list[tuple[str, str]], basic: str | None) -> str:
        headers = {"Authorization": basic} if basic else {}
        where = f"token service {realm} of registry {self.name}"
        with io_errors(where):
            async with self.session().get(URL(realm).with_query(query), headers=headers, ssl=self._ssl) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise error_for(resp.status, dict(resp.headers), body, where, "token")
        try:
            doc = load_json(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError) as exc:
            raise RegistryAuthError(f"{where} returned no JSON token") from exc
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{where} returned no token")
        return token

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        url: URL,
        *,
        scope: str,
        where: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request (answering one auth challenge) and yield the open response.

        Raises :class:`RegistryUnavailable` / :class:`RegistryTlsError` for I/O failures and
        :class:`RegistryAuthError` for a challenge that cannot be answered; HTTP statuses are
        left to the caller.
        """
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._auth.header_for(scope)
            if auth:
                hdrs["Authorization"] = auth
            self.stats.requests += 1
            with io_errors(where):
                resp = await self.session().request(method, url, headers=hdrs, data=data, ssl=self._ssl)
            if resp.status == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate")
                resp.release()
                if await self._auth.answer(challenge, scope, auth, self._fetch_token):
                    continue
                raise RegistryAuthError(f"{where}: registry refused the credentials (401)")
            try:
                with io_errors(where):
                    yield resp
            finally:
                resp.release()
            return

    async def call(
        self,
        method: str,
        url: URL,
        *,
        scope: str,
        where: str,
        kind: str,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        retry: bool = True,
    ) -> Reply:
        """Send a request, read the body, raise the mapped error unless the status is in ``ok``."""

        async def once() -> Reply:
            async with self.open(method, url, scope=scope, where=where, headers=headers, data=data) as resp:
                body = await resp.read()
                if resp.status not in ok:
                    raise error_for(resp.status, dict(resp.headers), body, where, kind)
                return Reply(resp.status, dict(resp.headers), body)

        return await self.retrying(once) if retry else await once()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, (int, float)):
            return min(float(after), self.retry.max_retry_after)
        backoff = wait_random_exponential(multiplier=self.retry.initial_wait, max=self.retry.max_wait)
        return float(backoff(state))

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    async def retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` under the retry policy; the last transient error propagates."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RegistryTransientError),
            stop=stop_after_attempt(max(1, self.retry.attempts)),
            wait=self._wait,
            before_sleep=self._count_retry,
            reraise=True,
        ):
            with attempt:
                return await op()
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
