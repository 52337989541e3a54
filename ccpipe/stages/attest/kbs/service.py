"""Assembly of the KBS and its service factory for ``ccpipe up``.

:func:`build_kbs` wires the parts (sessions, appraiser, tokens, events, store, policies, admin);
:func:`serve_http` runs the aiohttp server on loopback; :func:`serve_kbs` is the
``ServiceFactory``: with ``CCPIPE_KBS_URL`` set it starts nothing and passes that URL on,
otherwise it starts the embedded KBS (events signed as component ``kbs``, resources in the
NATS KV bucket; RCAR over HTTP and over NATS on ``ccpipe.kbs.<op>``; runner nodes' admission on
``ccpipe.nodes.*``, :mod:`ccpipe.stages.attest.kbs.node_join_nats`) and yields the endpoints
with ``kbs_url`` set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from nats.js import JetStreamContext

from ccpipe.pipeline.bus import EventPublisher, close_within, connect, provision_stream
from ccpipe.pipeline.nats_auth import creds_for, tls_context
from ccpipe.pipeline.ports import http_url, stable_port
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import CcpipeError
from ccpipe.stages.attest.appraisal import AttestationService
from ccpipe.stages.attest.kbs.admin import KbsAdmin
from ccpipe.stages.attest.kbs.admin_auth import AdminAuthenticator, enrolled_sign_keys, ensure_admin_keypair
from ccpipe.stages.attest.kbs.appraiser import Appraiser
from ccpipe.stages.attest.kbs.attestation import ServiceAppraiser, ServicePolicies, ServiceReferences
from ccpipe.stages.attest.kbs.audit import AuditEvents, Publish
from ccpipe.stages.attest.kbs.core import KbsCore
from ccpipe.stages.attest.kbs.http import KbsHttp
from ccpipe.stages.attest.kbs.nats_service import NatsKbs
from ccpipe.stages.attest.kbs.node_join_nats import NatsNodeJoin, attested_node_keys, node_attestations_bucket
from ccpipe.stages.attest.kbs.node_proof import NodeKeys
from ccpipe.stages.attest.kbs.refusals import RefusalTrail
from ccpipe.stages.attest.kbs.resources import ResourceReleaser
from ccpipe.stages.attest.kbs.sessions import NonceLedger, SessionStore
from ccpipe.stages.attest.kbs.store import ResourceBackend, ResourceStore, load_kek
from ccpipe.stages.attest.kbs.store_nats import NatsKvBackend, NatsNonceLedger
from ccpipe.stages.attest.kbs.tokens import TokenBroker

_log = logging.getLogger("ccpipe.kbs")

SESSION_TIMEOUT_S = 300.0
"""How long an RCAR session (and so its spent nonce) lives, unless configured."""


Instrument = Callable[[web.Application], None]
"""Adds routes the KBS does not serve itself to its application (the assembly passes the
telemetry routes: ``/metrics``, ``/readyz``), before it starts."""


@dataclass
class Kbs:
    """One KBS: its handshake core, resource releaser, admin API and HTTP adapter."""

    core: KbsCore
    releaser: ResourceReleaser
    admin: KbsAdmin
    http: KbsHttp


def publisher_for(js: JetStreamContext, data_dir: Path) -> Publish:
    """Stores events signed with the ``kbs`` component key (``EventPublisher`` + ``event_signer``)."""
    pub = EventPublisher(js, signer=event_signer(data_dir), timeout=5.0)

    async def publish(event: Event, msg_id: str) -> None:
        await pub.publish(event, msg_id=msg_id)

    return publish


def build_kbs(
    data_dir: Path,
    publish: Publish,
    backend: ResourceBackend,
    *,
    allow_emulated: bool,
    service: AttestationService | None = None,
    appraiser: Appraiser | None = None,
    session_timeout_s: float = SESSION_TIMEOUT_S,
    nonce_ledger: NonceLedger | None = None,
    inline_appraisal: bool = False,
    auth_per_minute: int = 600,
    node_keys: NodeKeys | None = None,
) -> Kbs:
    """A KBS over ``data_dir`` (KEK, token, session and admin keys), storing events with ``publish``.

    ``service`` defaults to the embedded attestation service of ``data_dir``; ``appraiser``
    (default: that service) may be replaced, e.g. by a benchmark. ``nonce_ledger`` is where
    spent nonces are shared between replicas (default: this process only). With
    ``inline_appraisal`` appraisals and resource decisions run on the event loop instead of a
    thread (cheaper when every core has its own KBS process). ``auth_per_minute`` is how many
    handshakes one client may open per minute over HTTP (0: no limit). ``node_keys`` looks up
    attested runner nodes' keys, which node proofs are checked against (None: no session is
    attributed to a node; :mod:`.node_proof`). Raises
    :class:`ResourceStoreError` for an unusable KEK file.
    """
    if service is None:
        service = AttestationService.for_data_dir(data_dir, allow_emulated=allow_emulated)
    references = ServiceReferences(service)
    sessions = SessionStore.for_data_dir(data_dir, ledger=nonce_ledger, timeout_s=session_timeout_s)
    tokens = TokenBroker.for_data_dir(data_dir)
    events = AuditEvents(publish)
    store = ResourceStore(backend, load_kek(data_dir))
    policies = ServicePolicies(service)
    if appraiser is None:
        appraiser = ServiceAppraiser(service)
    core = KbsCore(sessions=sessions, appraiser=appraiser, tokens=tokens, events=events, references=references,
                   inline_appraisal=inline_appraisal, node_keys=node_keys)
    releaser = ResourceReleaser(sessions=sessions, tokens=tokens, store=store, policies=policies, events=events,
                                inline_decisions=inline_appraisal, allow_emulated=allow_emulated)
    auth = AdminAuthenticator(ensure_admin_keypair(data_dir), enrolled_sign_keys(data_dir))
    admin = KbsAdmin(auth=auth, store=store, policies=policies,
                     references=references, events=events)
    refusals = RefusalTrail(events.requests_refused, interval_s=60.0, auth_per_interval=auth_per_minute)
    return Kbs(core=core, releaser=releaser, admin=admin, http=KbsHttp(core, releaser, admin, refusals))


async def provision_kbs_buckets(js: JetStreamContext, *, session_timeout_s: float = SESSION_TIMEOUT_S) -> None:
    """Create the KBS's buckets (sealed resources, spent nonces) if absent: the provisioning step
    of ``ccpipe up``'s admin identity (a KBS's own credential may only open them)."""
    await NatsKvBackend.open(js)
    await NatsNonceLedger.open(js, session_timeout_s=session_timeout_s)
    await node_attestations_bucket(js)


async def open_kbs(js: JetStreamContext, data_dir: Path, *, allow_emulated: bool, **kw: Any) -> Kbs:
    """:func:`build_kbs` on NATS: events on ``js``, resources and spent nonces in its KV buckets
    (what every replica sharing that JetStream and ``data_dir`` needs). ``kw`` go to :func:`build_kbs`."""
    timeout = float(kw.pop("session_timeout_s", SESSION_TIMEOUT_S))
    kw.setdefault("node_keys", attested_node_keys(await node_attestations_bucket(js)))
    return build_kbs(data_dir, publisher_for(js, data_dir), await NatsKvBackend.open(js),
                     allow_emulated=allow_emulated, session_timeout_s=timeout,
                     nonce_ledger=await NatsNonceLedger.open(js, session_timeout_s=timeout), **kw)


@asynccontextmanager
async def serve_http(kbs: Kbs, host: str = "127.0.0.1", port: int = 0, *,
                     reuse_port: bool = False, instrument: Instrument | None = None) -> AsyncIterator[str]:
    """Serve ``kbs`` over HTTP while the block is open; yields its base URL (``http://host:port``).

    ``reuse_port``: bind with ``SO_REUSEPORT`` so several processes share the port; ``instrument``
    adds routes to the application first.
    """
    app = kbs.http.app()
    if instrument is not None:
        instrument(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    flusher = asyncio.create_task(_flush_refusals(kbs.http.refusals))
    try:
        yield http_url(host, bound)
    finally:
        flusher.cancel()
        await runner.cleanup()
        try:
            await kbs.http.refusals.flush(all_intervals=True)
        except CcpipeError as exc:
            _log.warning("the last refusal summaries could not be stored: %s", exc.message)


async def _flush_refusals(trail: RefusalTrail) -> None:
    """Store the refusal summaries of ended intervals, a few times per interval, until cancelled."""
    while True:
        await asyncio.sleep(max(trail.interval_s / 4, 0.05))
        try:
            await trail.flush()
        except CcpipeError as exc:  # kept for the next round: the bus may be back by then
            _log.warning("refusal summaries could not be stored yet: %s", exc.message)


@asynccontextmanager
async def run_kbs(nats_url: str, data_dir: Path, *, allow_emulated: bool, creds: str | None = None,
                  tls: ssl.SSLContext | None = None, host: str = "127.0.0.1", port: int = 0,
                  reuse_port: bool = False, instrument: Instrument | None = None, **kw: Any) -> AsyncIterator[str]:
    """One whole KBS while the block is open — RCAR over HTTP on ``host:port`` and over NATS on
    ``ccpipe.kbs.*`` — connected to ``nats_url``; yields its URL. ``instrument`` goes to
    :func:`serve_http`, ``kw`` to :func:`build_kbs`.

    Raises :class:`TransientError` when NATS cannot be reached and ``OSError`` when the port
    cannot be bound.
    """
    nc = await connect(nats_url, name=f"ccpipe-kbs-{os.getpid()}", creds=creds, identity=Component.KBS,
                       tls=tls)
    try:
        js = nc.jetstream()
        await provision_stream(js)
        # one attestation service: the KBS appraises enclaves and admits runner nodes with the same verifiers
        service = kw.pop("service", None) or AttestationService.for_data_dir(data_dir, allow_emulated=allow_emulated)
        kbs = await open_kbs(js, data_dir, allow_emulated=allow_emulated, service=service, **kw)
        over_nats = NatsKbs(kbs.core, kbs.releaser)
        joins = NatsNodeJoin(service, await node_attestations_bucket(js), publisher_for(js, data_dir),
                             instance=f"{socket.gethostname()}:{os.getpid()}")
        await over_nats.start(nc)
        await joins.start(nc)
        try:
            async with serve_http(kbs, host, port, reuse_port=reuse_port, instrument=instrument) as url:
                yield url
        finally:
            await joins.stop()
            await over_nats.stop()
    finally:
        await close_within(nc)


@asynccontextmanager
async def serve_kbs(settings: Settings, endpoints: Endpoints, *,
                    instrument: Instrument | None = None) -> AsyncIterator[Endpoints]:
    """The KBS service factory: an external KBS (``CCPIPE_KBS_URL``) or the embedded one, on
    ``CCPIPE_LISTEN_HOST`` (loopback by default) and the data directory's stable port
    (workloads' initdata names its URL: :mod:`ccpipe.pipeline.ports`);
    ``instrument`` adds routes to its HTTP application (see :data:`Instrument`).

    Raises :class:`TransientError` when NATS cannot be reached and :class:`ConfigurationError` when
    the port is taken.
    """
    if settings.kbs_url:
        yield endpoints.model_copy(update={"kbs_url": settings.kbs_url})
        return
    port = await asyncio.to_thread(stable_port, settings, "kbs")  # it may wait for the port to be released
    async with run_kbs(endpoints.nats_url, settings.data_dir, allow_emulated=settings.allow_emulated,
                       creds=creds_for(settings, Component.KBS), tls=tls_context(settings),
                       host=settings.listen_host, port=port, instrument=instrument) as url:
        yield endpoints.model_copy(update={"kbs_url": url})
