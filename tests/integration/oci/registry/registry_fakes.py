"""Small aiohttp servers on 127.0.0.1 for the registry client's tests: a liar, a flaky one, an auth proxy."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Served:
    """A running test server: its address and what it saw."""

    runner: web.AppRunner
    address: str
    hits: list[str] = field(default_factory=list)

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(routes: dict[tuple[str, str], Handler]) -> Served:
    """Start an aiohttp app on a free loopback port with ``{(method, path pattern): handler}``."""
    app = web.Application()
    holder: list[Served] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        holder[0].hits.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    app.middlewares.append(record)
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served = Served(runner, f"127.0.0.1:{port}")
    holder.append(served)
    return served


@dataclass
class AuthProxy:
    """Forwards to a real registry, but demands Bearer tokens (from its /token) or Basic auth."""

    upstream: str
    mode: str  # "bearer" or "basic"
    user: str = "alice"
    password: str = "s3cret"
    tokens: set[str] = field(default_factory=set)
    token_requests: list[str] = field(default_factory=list)
    served: Served | None = None

    @property
    def address(self) -> str:
        assert self.served is not None
        return self.served.address

    def _basic_ok(self, header: str | None) -> bool:
        want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == want

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(request.query_string)
        if not self._basic_ok(request.headers.get("Authorization")):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401)
        tok = secrets.token_hex(8)
        self.tokens.add(tok)
        return web.json_response({"token": tok, "expires_in": 300})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if self.mode == "basic":
            if not self._basic_ok(auth):
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        elif auth.removeprefix("Bearer ") not in self.tokens:
            name = request.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0]
            challenge = f'Bearer realm="http://{self.address}/token",service="fake-registry"'
            if name and request.path != "/v2/":
                challenge += f',scope="repository:{name}:pull,push"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "host")}
        headers["Host"] = self.address  # so the registry's Location headers point back at the proxy
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                f"http://{self.upstream}{request.path_qs}",
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as resp,
        ):
            data = await resp.read()
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower()
                in (
                    "location",
                    "docker-content-digest",
                    "content-type",
                    "range",
                    "docker-upload-uuid",
                    "content-length",
                )
            }
            return web.Response(status=resp.status, body=data if request.method != "HEAD" else None, headers=out)


async def start_auth_proxy(upstream: str, mode: str) -> AuthProxy:
    proxy = AuthProxy(upstream, mode)
    routes: dict[tuple[str, str], Handler] = {("GET", "/token"): proxy.token}
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        routes[(method, "/v2/{tail:.*}")] = proxy.forward
    proxy.served = await serve(routes)
    return proxy
