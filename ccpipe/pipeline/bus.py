"""NATS connection, stream provisioning and event publishing.

The stream ``CCPIPE_EVENTS`` is the trail, so it is created only by :func:`provision_stream`,
an explicit step, and read back: a field the server did not echo (an old server ignoring a
setting) or an existing stream with another configuration is an error naming the field.
FastStream is only ever given ``declare=False`` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.client import DEFAULT_INBOX_PREFIX
from nats.aio.client import Client as NatsClient
from nats.errors import AuthorizationError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from ccpipe.pipeline.nats_auth import creds_for, inbox_prefix, tls_context
from ccpipe.pipeline.servers import require_nats_version
from ccpipe.pipeline.telemetry.health import track_connection
from ccpipe.pipeline.telemetry.metrics import count_reconnects, observe_published
from ccpipe.pipeline.telemetry.tracing import inject
from ccpipe.schemas.cloudevent_wire import STRUCTURED_CONTENT_TYPE
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import SUBJECT_PREFIX, Event
from ccpipe.schemas.errors import ConfigurationError, TransientError
from ccpipe.schemas.settings_rules import nats_servers

log = logging.getLogger("ccpipe.bus")

EVENTS_STREAM = "CCPIPE_EVENTS"
DUPLICATE_WINDOW_S = 1200.0
"""De-duplication window: longer than max_deliver × ack_wait, so a late redelivery is still caught."""


def events_stream_config(replicas: int = 1) -> StreamConfig:
    """The one configuration of ``CCPIPE_EVENTS``, kept on ``replicas`` servers (see :func:`cluster_replicas`)."""
    return StreamConfig(
        name=EVENTS_STREAM,
        description="ccpipe: every event of every workload; the audit trail",
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        num_replicas=replicas,
    )


MAX_REPLICAS = 3
"""Copies of the stream and of each bucket on a cluster: a majority survives one lost node."""


def cluster_replicas(js: JetStreamContext) -> int:
    """``min(3, cluster size)`` for the server ``js`` is connected to; 1 for a single server.

    The cluster size is what the server's INFO says at connect time (its cluster name and the
    client URLs of every node it is routed to), so it cannot disagree with the servers the way a
    setting could. A named cluster whose nodes advertise no URLs (``no_advertise``) counts as
    :data:`MAX_REPLICAS`: creating a stream then fails on a smaller cluster, naming it, rather
    than quietly keeping one copy.
    """
    # nats-py keeps the INFO of the connect in a private field; it has no public accessor
    info: dict[str, Any] = js._nc._server_info
    if not info.get("cluster"):
        return 1
    urls = set(info.get("connect_urls") or ())
    return min(MAX_REPLICAS, len(urls)) if urls else MAX_REPLICAS


def require_replicas(stream: str, have: int | None, want: int) -> None:
    """Refuse a stream (a KV bucket: ``KV_<bucket>``) kept on fewer servers than ``want``, naming it."""
    if (have or 1) < want:
        raise ConfigurationError(
            f"{stream_what(stream)} has {have or 1} replica(s) but this cluster needs {want}: "
            "losing one server would lose it",
            hint=f"as the NATS admin, raise its replicas (nats stream edit {stream} --replicas {want}), "
                 "or remove it so 'ccpipe up' provisions it again",
            code="bus.replicas.too_few",
        )


_CHECKED_STREAM_FIELDS = ("subjects", "retention", "storage", "deny_delete", "deny_purge", "duplicate_window",
                          "allow_rollup_hdrs", "max_age", "max_msgs", "max_bytes", "discard")


async def connect(url: str, *, name: str, creds: str | None = None, timeout: float = 5.0,
                  identity: str | None = None, tls: ssl.SSLContext | None = None) -> NatsClient:
    """Connect to NATS and refuse a server older than 2.10.

    ``identity`` (see :mod:`ccpipe.pipeline.nats_auth`) gives the connection its private inbox
    prefix and names the component in errors. Raises :class:`TransientError` if no server
    answers and :class:`ConfigurationError` if the server is too old or refuses the credentials.
    """
    who = identity or name
    nc, first = NatsClient(), FirstConnect(timeout)
    try:
        await nc.connect(
            nats_servers(url),
            name=name,
            user_credentials=creds,
            tls=tls,
            inbox_prefix=inbox_prefix(identity) if identity else DEFAULT_INBOX_PREFIX,
            error_cb=first.on_error,
            connect_timeout=timeout,  # type: ignore[arg-type]  # nats-py takes any number
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            reconnected_cb=count_reconnects(name),
        )
    except NatsError as exc:
        with contextlib.suppress(Exception):  # half-open after a refusal; nothing to save
            await nc.close()
        if not refused(exc):
            raise
        raise refusal_error(url, who, creds, exc) from exc
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"TLS to NATS at {url} failed for {who}: {exc.reason or exc}",
            hint="set CCPIPE_NATS_CA to the CA that signed the server's certificate",
            code="bus.tls.failed",
        ) from exc
    except (NoServersError, OSError, NatsTimeoutError) as exc:
        with contextlib.suppress(Exception):  # nothing of a failed first connect is worth keeping
            await nc.close()
        raise TransientError(
            f"cannot reach NATS at {url}: {exc}",
            hint="start it (or unset CCPIPE_NATS_URL to use the embedded server)",
            code="bus.unreachable",
        ) from exc
    first.connected = True
    v = nc.connected_server_version
    try:
        require_nats_version((v.major, v.minor, v.patch), f"the NATS server at {url}")
    except ConfigurationError:
        await nc.close()
        raise
    track_connection(nc, name)
    return nc


def refused(exc: BaseException) -> bool:
    """True when the server refused the connection itself (an ``-ERR`` answer to CONNECT).

    Retrying cannot help: the credentials (or their absence) were refused, or the CONNECT was
    rejected (e.g. a user JWT longer than the server's ``max_control_line``).
    """
    return isinstance(exc, AuthorizationError) or str(exc).startswith("nats: '")


def refusal_error(url: str, who: str, creds: str | None, exc: BaseException) -> ConfigurationError:
    """The one-sentence error for a connection the server refused, naming the component and its file."""
    reason = str(exc).removeprefix("nats: ").strip("'")
    return ConfigurationError(
        f"NATS at {url} refused {who}: "
        + (f"its credentials {creds} were not accepted ({reason})" if creds else "it presented no credentials"),
        hint="use the creds file issued for this component (CCPIPE_NATS_CREDS, or <data dir>/creds/<component>.creds "
             "as 'ccpipe up' writes them)",
        code="bus.auth.refused",
    )


class FirstConnect:
    """The ``error_cb`` of a connection (:meth:`on_error`): ends the first connect that cannot succeed.

    With unlimited reconnects (a service must survive a NATS restart) nats-py also retries the
    first connect forever, so ``ccpipe events`` against a closed port would never end; raising
    from the error callback is the only way out of that loop. A refusal (credentials, or their
    absence) or a server certificate that does not verify ends it at once, since retrying cannot
    help; anything else after ``timeout`` seconds. Until then failed attempts are quiet (the
    caller reports the last one); once connected, errors are logged in one line.
    """

    def __init__(self, timeout: float, *, connected: bool = False) -> None:
        self.deadline = time.monotonic() + timeout
        self.connected = connected

    async def on_error(self, exc: Exception) -> None:
        """Raise ``exc`` (ending the first connect) on a refusal or once the deadline has passed; log later errors."""
        if not self.connected:
            if refused(exc) or isinstance(exc, ssl.SSLError) or time.monotonic() >= self.deadline:
                raise exc
            return
        log.warning("NATS: %s", exc)


CLOSE_TIMEOUT_S = 5.0
"""Longest a service waits for its NATS connection to close when it stops."""


async def close_within(nc: NatsClient, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``nc``, giving up after ``timeout_s``: a stopping service must not wait on a slow server.

    nats-py's close flushes what is pending and waits for the socket to close, with no limit of
    its own; under load (or with a server that stopped reading) a test teardown or a shutdown
    hung there. Past the limit the connection is left to the event loop's end.
    """
    try:
        await asyncio.wait_for(nc.close(), timeout_s)
    except TimeoutError:
        log.warning("the NATS connection %s did not close within %.0f s", nc.connected_url, timeout_s)


async def connect_as(settings: Settings, url: str, identity: str, *, name: str | None = None) -> NatsClient:
    """Connect as ``identity``: its creds file, the configured CA and its private inbox prefix."""
    return await connect(url, name=name or f"ccpipe-{identity}", creds=creds_for(settings, identity),
                         identity=identity, tls=tls_context(settings))


def _compare(expected: Any, actual: Any, fields: tuple[str, ...], what: str) -> None:
    for field in fields:
        want, got = getattr(expected, field), getattr(actual, field)
        close_enough = field == "duplicate_window" and want is not None and got is not None
        if close_enough and abs(float(want) - float(got)) < 1e-3:
            continue
        if want is None or want == got:
            continue
        raise ConfigurationError(
            f"{what}: field {field!r} is {got!r} on the server but ccpipe requires {want!r}",
            hint="the server ignored or changed a setting; use nats-server >= 2.10 and do not edit the stream by hand",
            code="bus.stream.mismatch",
        )


CLUSTER_SETTLE_S = 15.0
"""How long a JetStream request is retried while a cluster elects a new leader (after a node loss
the stream's API and publishes time out for a few seconds, then answer again)."""
_T = TypeVar("_T")


async def settled(call: Callable[[], Awaitable[_T]], what: str, js: JetStreamContext,
                  settle_s: float = CLUSTER_SETTLE_S) -> _T:
    """``await call()``, retried with backoff for up to ``settle_s`` seconds while JetStream does not
    answer (timeout, no responders, temporarily unavailable); then :class:`TransientError` naming ``what``.

    Retried only while ``js``'s connection is up: that is a cluster choosing a leader, which passes.
    With no server reachable at all the first failure is reported at once, so a caller (the KBS
    answering 503) is not held while nothing can change. Only for idempotent calls: a read, a
    create of what is absent, a publish with a de-duplication id.
    """
    deadline = time.monotonic() + settle_s
    delay = 0.25
    client = getattr(js, "_nc", None)  # nats-py keeps the connection there; no public accessor
    while True:
        try:
            return await call()
        except (NatsTimeoutError, TimeoutError, NoRespondersError, ServiceUnavailableError) as exc:
            connected = bool(getattr(client, "is_connected", False))
            if not connected or time.monotonic() + delay > deadline:
                raise TransientError(f"{what}: NATS JetStream did not answer within {settle_s:.0f} s ({exc!r})",
                                     hint="check that a majority of the NATS cluster's servers is up",
                                     code="bus.unavailable") from exc
            log.info("%s: JetStream did not answer (%r); retrying in %.2f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def provision_stream(js: JetStreamContext) -> StreamConfig:
    """Create ``CCPIPE_EVENTS`` if absent, then check what the server echoes back.

    An existing stream is never rewritten; a difference, or fewer replicas than
    :func:`cluster_replicas`, is a :class:`ConfigurationError`.
    """
    want = events_stream_config(cluster_replicas(js))
    try:
        info = await settled(lambda: js.stream_info(EVENTS_STREAM), f"reading the stream {EVENTS_STREAM}", js)
    except NotFoundError:
        info = await settled(lambda: js.add_stream(want), f"creating the stream {EVENTS_STREAM}", js)
    _compare(want, info.config, _CHECKED_STREAM_FIELDS, f"stream {EVENTS_STREAM}")
    require_replicas(EVENTS_STREAM, info.config.num_replicas, want.num_replicas or 1)
    return info.config


def stream_what(stream: str) -> str:
    """``stream X``, or ``bucket Y`` for the stream ``KV_Y`` of a KV bucket (for messages)."""
    return f"bucket {stream.removeprefix('KV_')}" if stream.startswith("KV_") else f"stream {stream}"


async def check_provisioned(js: JetStreamContext, streams: tuple[str, ...]) -> None:
    """Each of ``streams`` (a KV bucket as ``KV_<bucket>``) exists on at least :func:`cluster_replicas` servers.

    For a component that may not create them: raises :class:`ConfigurationError` naming the
    first one missing (and how to provision it) or kept on too few servers.
    """
    want = cluster_replicas(js)
    for stream in streams:
        what = stream_what(stream)
        try:
            info = await js.stream_info(stream)
        except NotFoundError as exc:
            raise ConfigurationError(
                f"{what} does not exist on NATS, and only the admin identity may create it",
                hint="run 'ccpipe up --only nats,registry' (it provisions every stream and bucket as admin), "
                     "or provision them with the admin credentials before starting the components",
                code="bus.not_provisioned",
            ) from exc
        require_replicas(stream, info.config.num_replicas, want)


def stage_consumer_config(durable: str, filter_subject: str, settings: Settings) -> ConsumerConfig:
    """Durable pull consumer of one stage: explicit ack, bounded deliveries."""
    return ConsumerConfig(
        durable_name=durable,
        description=f"ccpipe stage {durable}",
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=1000,
    )


async def provision_consumer(js: JetStreamContext, config: ConsumerConfig) -> None:
    """Create or update a stage's durable consumer and check the echoed configuration."""
    info = await js.add_consumer(EVENTS_STREAM, config)
    _compare(config, info.config, ("filter_subject", "ack_policy", "max_deliver", "durable_name"),
             f"consumer {config.durable_name}")


@dataclass
class EventPublisher:
    """Publishes events as their canonical bytes (structured-mode CloudEvents), with a de-duplication id."""

    js: JetStreamContext
    timeout: float = 10.0
    signer: Callable[[Event, bytes], dict[str, str]] | None = None
    """Adds the emitting component's signature header (see :mod:`ccpipe.pipeline.signing`)."""

    async def publish(self, event: Event, msg_id: str | None = None, headers: dict[str, str] | None = None) -> PubAck:
        """Store ``event`` in ``CCPIPE_EVENTS``; returns the server's ack (``duplicate`` set on a repeat).

        Raises :class:`TransientError` when the server does not confirm storage in time.
        """
        # Content-Type marks a structured-mode CloudEvent (the NATS protocol binding)
        hdrs = {"Nats-Msg-Id": msg_id or event.id, "Ccpipe-Event-Id": event.id,
                "Content-Type": STRUCTURED_CONTENT_TYPE, **(headers or {})}
        data = event.canonical_bytes()  # once: RFC 8785 of a large event (evidence) is not cheap
        if self.signer is not None and "Ccpipe-Signature" not in hdrs:
            hdrs.update(self.signer(event, data))
        inject(hdrs)  # the publishing span becomes the parent of the span that handles this event
        try:
            # retried through a leader election: the de-duplication id makes a repeat store nothing twice
            ack = await settled(lambda: self.js.publish(
                event.nats_subject, data, stream=EVENTS_STREAM, headers=hdrs, timeout=self.timeout
            ), f"storing {event.type.value} for {event.workload_id}", self.js)
        except TransientError:
            raise
        except (TimeoutError, NatsError, OSError) as exc:
            raise TransientError(
                f"storing {event.type.value} for {event.workload_id} failed: {exc!r}", code="bus.publish"
            ) from exc
        if not ack.duplicate:
            observe_published(event)
        return ack
