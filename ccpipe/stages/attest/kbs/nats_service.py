"""RCAR over NATS request/reply, for ccpipe's own runners: the same core, another transport.

Subjects ``ccpipe.kbs.auth``, ``ccpipe.kbs.attest`` and ``ccpipe.kbs.resource`` (queue group
``ccpipe-kbs``, so KBS replicas share them). The request body is the HTTP body (RCAR JSON);
headers carry what HTTP puts elsewhere: ``Kbs-Session`` (the cookie), ``Authorization``
(Bearer token) and ``Kbs-Path`` (``<repository>/<type>/<tag>``). The reply carries
``Kbs-Status`` (the HTTP status), ``Kbs-Session`` and the same body as over HTTP (Trustee's
error body on refusal). Every decision stores the same events as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.kbs import ErrorInformation
from ccpipe.stages.attest.kbs.core import MAX_BODY_BYTES, KbsCore
from ccpipe.stages.attest.kbs.errors import BodyTooLarge, InvalidResourcePath, KbsError, KbsUnavailable
from ccpipe.stages.attest.kbs.resources import ResourceReleaser

SUBJECT_PREFIX = "ccpipe.kbs"
QUEUE = "ccpipe-kbs"
_log = logging.getLogger("ccpipe.kbs.nats")


def _error(exc: CcpipeError) -> tuple[int, bytes]:
    if isinstance(exc, KbsError):
        return exc.status, ErrorInformation(type=exc.error_type, detail=exc.message).model_dump_json().encode()
    body = ErrorInformation(type="https://github.com/confidential-containers/kbs/errors/PluginInternalError",
                            detail=exc.message)
    return 500, body.model_dump_json().encode()


STOP_TIMEOUT_S = 5.0
"""Longest a service waits to unsubscribe when it stops."""
START_TIMEOUT_S = 5
"""Longest a service waits for the server to confirm its subscriptions when it starts."""


async def confirm_subscriptions(nc: NatsClient, what: str) -> None:
    """Return once the server holds the subscriptions just made on ``nc`` (``what`` names the service).

    nats-py sends a SUB in the background: without this round trip a service that says it is
    serving may not be yet, and a request sent at once meets "no responders" (a node joining
    right after the KBS started was refused that way under load). Raises :class:`TransientError`.
    """
    try:
        await nc.flush(timeout=START_TIMEOUT_S)
    except (NatsError, NatsTimeoutError, TimeoutError) as exc:
        raise TransientError(f"the server did not confirm the subscriptions of {what}: {exc!r}",
                             code="kbs.nats.subscribe") from exc


async def unsubscribe_all(subs: list[Subscription], *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Unsubscribe each of ``subs`` and forget them (a service stopping), within ``timeout_s`` in all.

    Unsubscribing also cancels a request being handled (its requester gets no answer and retries
    elsewhere). Each unsubscribe writes to the server; a server too busy to read must not stop
    the shutdown, so past the limit the rest go with the connection.
    """
    async def each() -> None:
        for sub in subs:
            with contextlib.suppress(NatsError):  # the connection may already be closing
                await sub.unsubscribe()

    try:
        await asyncio.wait_for(each(), timeout_s)
    except TimeoutError:
        _log.warning("unsubscribing took over %.0f s; the connection's close ends the rest", timeout_s)
    finally:
        subs.clear()


class NatsKbs:
    """Serves one KBS's handshake core and resource releaser on ``ccpipe.kbs.<op>``."""

    def __init__(self, core: KbsCore, releaser: ResourceReleaser) -> None:
        """Serve ``core`` (handshake) and ``releaser`` (resources), like the HTTP adapter."""
        self.core, self.releaser = core, releaser
        self._subs: list[Subscription] = []
        self._nc: NatsClient | None = None

    async def start(self, nc: NatsClient) -> None:
        """Subscribe (queue group ``ccpipe-kbs``) to every operation."""
        self._nc = nc
        for op in ("auth", "attest", "resource"):
            self._subs.append(await nc.subscribe(f"{SUBJECT_PREFIX}.{op}", queue=QUEUE, cb=self._handle))
        await confirm_subscriptions(nc, "the KBS over NATS")

    async def stop(self) -> None:
        """Unsubscribe."""
        await unsubscribe_all(self._subs)

    async def _handle(self, msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[-1]
        headers = msg.headers or {}
        session_id = headers.get("Kbs-Session") or None
        out_session = session_id
        try:
            if len(msg.data) > MAX_BODY_BYTES:
                raise BodyTooLarge(f"body of {len(msg.data)} bytes exceeds {MAX_BODY_BYTES}")
            if op == "auth":
                challenge, session = await self.core.auth(msg.data)
                status, body, out_session = 200, challenge.model_dump_json(by_alias=True).encode(), session.cookie
            elif op == "attest":
                token, session = await self.core.attest(session_id, msg.data)
                status, body, out_session = 200, token.model_dump_json().encode(), session.cookie
            elif op == "resource":
                auth = headers.get("Authorization", "")
                bearer = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
                jwe = await self.releaser.release(headers.get("Kbs-Path", ""), session_id=session_id,
                                                      bearer=bearer)
                status, body = 200, jwe.model_dump_json().encode()
            else:
                raise InvalidResourcePath(f"{msg.subject} is not a KBS operation")
        except CcpipeError as exc:
            status, body = _error(exc)
        except Exception as exc:
            _log.exception("KBS internal error on %s", msg.subject)
            status, body = _error(CcpipeError(f"internal error: {type(exc).__name__}"))
        reply_headers = {"Kbs-Status": str(status)}
        if out_session:
            reply_headers["Kbs-Session"] = out_session
        if msg.reply and self._nc is not None:
            await self._nc.publish(msg.reply, body, headers=reply_headers)


class NatsTransport:
    """Client side: the :class:`~ccpipe.stages.attest.kbs.client.Transport` of RCAR over NATS."""

    def __init__(self, nc: NatsClient, *, timeout_s: float = 10.0) -> None:
        """Send requests on ``nc``."""
        self.nc = nc
        self.timeout_s = timeout_s

    async def request(self, method: str, path: str, body: bytes | None, session: str | None,
                      bearer: str | None = None) -> tuple[int, bytes, str | None]:
        """One request; returns (status, body, session). Raises :class:`KbsUnavailable` without a reply."""
        op, _, rest = path.partition("/")
        headers = {"Kbs-Path": rest}
        if session:
            headers["Kbs-Session"] = session
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            reply = await self.nc.request(f"{SUBJECT_PREFIX}.{op}", body or b"", timeout=self.timeout_s,
                                          headers=headers)
        except (NatsError, TimeoutError, OSError) as exc:
            raise KbsUnavailable(f"no KBS answered on {SUBJECT_PREFIX}.{op}: {exc!r}") from exc
        rh = reply.headers or {}
        try:
            status = int(rh.get("Kbs-Status", "0"))
        except ValueError:
            status = 0
        return status, reply.data, rh.get("Kbs-Session")
