"""Registry authentication: ``WWW-Authenticate`` challenges, Bearer tokens and Basic auth.

The distribution token flow: a request answered 401 carries
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"``; the client fetches a token from
the realm (with Basic credentials if it has any, anonymously otherwise), then repeats the
request with ``Authorization: Bearer <token>``. A ``Basic`` challenge is answered by sending
the credentials directly. Tokens are cached per scope so a push asks the token service once
per repository, not once per request.

Pure parsing plus a small stateful cache; the HTTP call for the token is passed in, so this
module imports no HTTP library. Imports nothing of the project but ``ccpipe.oci.registry.errors``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ccpipe.oci.registry.errors import RegistryAuthError

# key=value or key="quoted, value" pairs; quoted values may hold commas (scope lists do)
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or identity token) for a registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        """The ``Authorization`` value for HTTP Basic."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str]

    @property
    def scopes(self) -> list[str]:
        """The scopes the server asked for (space-separated in one ``scope`` parameter)."""
        return self.params.get("scope", "").split()


def parse_challenge(header: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` value such as ``Bearer realm="https://…",service="r"``.

    Raises :class:`RegistryAuthError` if the value has no scheme.
    """
    text = header.strip()
    scheme, _, rest = text.partition(" ")
    if not scheme or "=" in scheme:
        raise RegistryAuthError(f"the registry sent an unreadable WWW-Authenticate header {header!r}")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


# fetch_token(realm, query params, basic Authorization or None) -> token
TokenFetcher = Callable[[str, list[tuple[str, str]], str | None], Awaitable[str]]


class Authenticator:
    """Remembers how to authenticate to one registry and answers its challenges."""

    def __init__(self, credentials: Credentials | None, registry: str) -> None:
        self._credentials = credentials
        self._registry = registry
        self._basic = False
        self._tokens: dict[str, str] = {}
        # one token fetch per scope at a time: concurrent uploads meeting the same challenge
        # wait for the first fetch instead of each asking the token service
        self._locks: dict[str, asyncio.Lock] = {}

    def header_for(self, scope: str) -> str | None:
        """The ``Authorization`` value to send for a request needing ``scope``, if known yet."""
        if self._basic and self._credentials is not None:
            return self._credentials.basic_header()
        token = self._tokens.get(scope)
        return f"Bearer {token}" if token else None

    async def answer(self, header: str | None, scope: str, sent: str | None, fetch_token: TokenFetcher) -> bool:
        """React to a 401 on a request sent with ``Authorization: sent``; True to send it again.

        Concurrent requests may all meet the same challenge: one that finds credentials or a
        token newer than what it sent just retries with them.

        Raises :class:`RegistryAuthError` when the challenge cannot be answered (no credentials
        for Basic, an unknown scheme, a Bearer challenge without realm).
        """
        if not header:
            raise RegistryAuthError(f"registry {self._registry} answered 401 without a WWW-Authenticate challenge")
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise RegistryAuthError(
                    f"registry {self._registry} asks for a user name and password, but none were configured"
                )
            self._basic = True
            return sent != self._credentials.basic_header()  # False: they were sent and refused
        if challenge.scheme != "bearer":
            raise RegistryAuthError(
                f"registry {self._registry} asks for {challenge.scheme!r} authentication, which ccpipe does not do"
            )
        async with self._locks.setdefault(scope, asyncio.Lock()):
            current = self.header_for(scope)
            if current is not None and current != sent:
                return True  # another request fetched a token meanwhile
            return await self._fetch(challenge, scope, sent, fetch_token)

    async def _fetch(self, challenge: Challenge, scope: str, sent: str | None, fetch_token: TokenFetcher) -> bool:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self._registry} sent a Bearer challenge without a realm")
        query: list[tuple[str, str]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        # ask for what the server named and what this request needs (a mount needs two repositories)
        wanted = list(dict.fromkeys([*challenge.scopes, *scope.split()]))
        query.extend(("scope", s) for s in wanted)
        basic = self._credentials.basic_header() if self._credentials is not None else None
        token = await fetch_token(realm, query, basic)
        self._tokens[scope] = token
        return f"Bearer {token}" != sent  # the same token refused again: do not loop
