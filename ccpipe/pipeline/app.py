"""Assembly: which stages run in this ccpipe, and the AsyncAPI document of their subjects.

Imports every stage's handler; imported by nothing but the CLI.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import ServerError, ServiceUnavailableError

from ccpipe.enclave_runner.agent import embedded_node_id, serve_node_agent
from ccpipe.enclave_runner.run_claims import run_claims_bucket
from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.artifacts import artifacts_bucket
from ccpipe.pipeline.asyncapi import asyncapi_document as build_asyncapi
from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.lease import lease_bucket
from ccpipe.pipeline.audit.service import provision_audit_stream, serve_audit_log
from ccpipe.pipeline.bus import check_provisioned, connect_as, provision_stream
from ccpipe.pipeline.enrolment_bus import (
    enrol_embedded,
    enrolments_bucket,
    mirrored_enrolments,
    refresh_enrolments_once,
)
from ccpipe.pipeline.nats_auth import ADMIN, BUS_STREAMS, OBSERVER, provisioned_streams
from ccpipe.pipeline.runtime import StageSpec
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.pipeline.telemetry.http import instrument_app
from ccpipe.schemas.config import Settings
from ccpipe.schemas.events import EventType
from ccpipe.stages.attest.handler import attest_stages
from ccpipe.stages.attest.kbs.service import provision_kbs_buckets, serve_kbs
from ccpipe.stages.build.handler import build_stages
from ccpipe.stages.deploy.handler import deploy_stages, provision_deploy_buckets
from ccpipe.stages.deploy.scheduler_service import serve_scheduler
from ccpipe.stages.sign.handler import provision_sign_buckets, sign_stages
from ccpipe.stages.sign.retention_service import serve_retention

VERSION = "0.1.0"
T = TypeVar("T")
log = logging.getLogger("ccpipe.app")


StageFactory = Callable[[Settings, Endpoints], Sequence[StageSpec]]
"""Makes a part's stage specs from the settings and the endpoints of the running services."""

ServiceFactory = Callable[[Settings, Endpoints], AbstractAsyncContextManager[Endpoints]]
"""Runs a long-lived service (KBS, audit, node agent) while its block is open; yields the
endpoints, updated with its own URL where it serves one."""

COMPONENTS = ("build", "attest", "sign", "push", "schedule", "kbs", "audit", "runner")
"""What ``ccpipe serve`` runs one of, and ``ccpipe up`` all of: each connects as its own NATS identity
(a runner as ``runner-<node id>``)."""

STAGE_FACTORIES: tuple[tuple[StageFactory, tuple[str, ...]], ...] = (
    # the build runner's evidence comes from the node agent's TEE backends, injected here
    (functools.partial(build_stages, select_backend=select_backend), ("build",)),
    (attest_stages, ("attest",)),
    (sign_stages, ("sign",)),
    (deploy_stages, ("push", "schedule")),
)
"""Every stage of the flow, in flow order (handlers live with their stage: stages/<x>/handler.py),
with the components whose stages each factory makes (a stage's name is its component)."""

_KBS_SERVICE: ServiceFactory = functools.partial(serve_kbs, instrument=instrument_app)

SERVICES_BEFORE_STAGES: tuple[ServiceFactory, ...] = (serve_audit_log, serve_audit_api, _KBS_SERVICE, serve_scheduler)
"""Services the stages need running first (the KBS the sign stage registers keys with, the audit log).
The KBS serves the process's ``/metrics`` and ``/readyz`` beside RCAR, as Trustee's does."""

SERVICES_AFTER_STAGES: tuple[ServiceFactory, ...] = (serve_node_agent, serve_retention)
"""Services that feed the stages (the embedded node agent) or clean up after them (the image
layouts of ended workloads, see :mod:`ccpipe.stages.sign.retention`)."""

SERVICE_COMPONENT: dict[ServiceFactory, str] = {
    serve_audit_log: "audit", serve_audit_api: "audit", _KBS_SERVICE: "kbs", serve_scheduler: "schedule",
    serve_node_agent: "runner", serve_retention: "sign",
}
"""The component each service belongs to (``ccpipe serve audit`` runs the log and its HTTP API)."""

FLOW_END: frozenset[EventType] = frozenset({EventType.WORKLOAD_EXITED, EventType.FAILED})
"""Event types after which nothing more happens to a workload."""


def embedded_runner_nodes() -> tuple[str, ...]:
    """Node ids of the runner nodes the embedded default starts (each gets its own bus identity)."""
    return (embedded_node_id(),)


async def provision_bus(js: JetStreamContext) -> None:
    """Create what the pipeline stores on NATS: the trail, the audit stream and every KV bucket.

    Run with the admin identity (``ccpipe up``): no pipeline credential may create, change or
    delete a stream or bucket, so each component only opens what exists. What exists already
    is checked, never rewritten, as each opener does.
    """
    await provision_stream(js)
    await provision_audit_stream(js)
    await lease_bucket(js)
    await provision_deploy_buckets(js)
    await provision_kbs_buckets(js)
    await provision_sign_buckets(js)
    await run_claims_bucket(js)
    await enrolments_bucket(js)
    await artifacts_bucket(js)
    # an existing stream or bucket is opened as it is: here those kept on too few servers are refused
    await check_provisioned(js, BUS_STREAMS)


PROVISION_SETTLE_S = 15.0
"""How long provisioning retries a server-side failure (a cluster that has only just elected its leader)."""


async def provision_as_admin(settings: Settings, nats_url: str, *, enrol_local: bool = True) -> None:
    """:func:`provision_bus` over a connection of the admin identity (what ``ccpipe up`` does first).

    With ``enrol_local`` (``ccpipe up``: one data directory for every part), the admin key is made
    there if absent and each component's key of that directory is enrolled
    (:func:`ccpipe.pipeline.enrolment_bus.enrol_embedded`).

    A freshly formed cluster may refuse the first creates for a moment (a node still setting up
    the account's store, a leader still being chosen): those are retried for up to
    :data:`PROVISION_SETTLE_S`, which is safe as every step creates only what is absent.
    """
    nc = await connect_as(settings, nats_url, ADMIN, name="ccpipe-provision")
    deadline = time.monotonic() + PROVISION_SETTLE_S
    try:
        while True:
            try:
                await provision_bus(nc.jetstream())
                if enrol_local:
                    await enrol_embedded(nc.jetstream(), settings.data_dir)
                    await refresh_enrolments_once(settings, nc.jetstream())
                return
            except (ServerError, ServiceUnavailableError) as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("provisioning NATS: %s; retrying", exc)
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def check_provisioned_for(settings: Settings, nats_url: str, identity: str) -> None:
    """Connect as ``identity`` and check that every stream and bucket it uses exists on enough servers.

    What ``ccpipe serve`` does first: a component never creates what only the admin may, so a
    missing one is named (with how to provision it) before anything starts.
    """
    nc = await connect_as(settings, nats_url, identity, name=f"ccpipe-{identity}-check")
    try:
        await check_provisioned(nc.jetstream(), provisioned_streams(identity))
    finally:
        await nc.close()


def stage_specs(settings: Settings, endpoints: Endpoints,
                components: Collection[str] = COMPONENTS) -> list[StageSpec]:
    """The stages of ``components`` (default: every stage of the flow), in flow order.

    A factory whose components are not wanted is not called: ``ccpipe serve build`` makes no
    sign key and needs no KBS.
    """
    return [spec for factory, owners in STAGE_FACTORIES if set(owners) & set(components)
            for spec in factory(settings, endpoints) if spec.name in components]


@asynccontextmanager
async def running_components(
    settings: Settings, endpoints: Endpoints, components: Collection[str] = COMPONENTS, *,
    instance: str = "", published: Callable[[Endpoints], None] = lambda eps: None, identity: str = OBSERVER,
) -> AsyncIterator[Endpoints]:
    """Run ``components`` (default: all) against the servers of ``endpoints`` until the block ends.

    First the data directory's trusted keys are made the admin's enrolments, and kept so while the
    block runs (:func:`ccpipe.pipeline.enrolment_bus.mirrored_enrolments`, connected as ``identity``).

    Services the stages need (audit log and API, KBS, scheduler) start first, then the stages,
    then what feeds or follows them (node agent, retention). ``published`` is given the
    endpoints each time a service added its URL (``ccpipe up`` writes them to ``endpoints.json``).
    """
    if not components:
        yield endpoints
        return
    before = tuple(f for f in SERVICES_BEFORE_STAGES if SERVICE_COMPONENT[f] in components)
    after = tuple(f for f in SERVICES_AFTER_STAGES if SERVICE_COMPONENT[f] in components)
    async with (
        mirrored_enrolments(settings, endpoints.nats_url, identity),
        running_services(settings, endpoints, before) as eps,
    ):
        published(eps)
        specs = stage_specs(settings, eps, components)
        async with (
            bounded(run_stages(eps.nats_url, settings, specs, instance=instance), "stages"),
            running_services(settings, eps, after) as eps,
        ):
            published(eps)
            yield eps


@asynccontextmanager
async def running_services(
    settings: Settings, endpoints: Endpoints, factories: Sequence[ServiceFactory]
) -> AsyncIterator[Endpoints]:
    """Enter each service in order (each sees the endpoints of those before it); leave in reverse.

    A service that does not stop within :data:`STOP_TIMEOUT_S` is abandoned with an error naming
    it, so one stuck service never keeps ``ccpipe up`` or ``ccpipe demo`` from exiting.
    """
    async with AsyncExitStack() as stack:
        for factory in factories:
            name = getattr(factory, "__qualname__", repr(factory))
            endpoints = await stack.enter_async_context(bounded(factory(settings, endpoints), name))
        yield endpoints


@asynccontextmanager
async def bounded(cm: AbstractAsyncContextManager[T], name: str) -> AsyncIterator[T]:
    """``async with cm`` whose exit may take at most :data:`STOP_TIMEOUT_S`; then it is abandoned
    with an error naming ``name`` (a stuck stop must not keep the process from exiting)."""
    value = await cm.__aenter__()
    try:
        yield value
    except BaseException as exc:
        if not await _bounded_exit(cm, name)(type(exc), exc, exc.__traceback__):
            raise
    else:
        await _bounded_exit(cm, name)(None, None, None)


STOP_TIMEOUT_S = 45.0
"""How long one service may take to stop."""


def _bounded_exit(cm: AbstractAsyncContextManager[Any], name: str) -> Callable[..., Awaitable[bool | None]]:
    async def exit_(exc_type: Any, exc: Any, tb: Any) -> bool | None:
        try:
            return await asyncio.wait_for(cm.__aexit__(exc_type, exc, tb), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("service %s did not stop within %.0f s; abandoned", name, STOP_TIMEOUT_S)
            return None

    return exit_


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every subject (:mod:`ccpipe.pipeline.asyncapi`), with this ccpipe's stages."""
    nats_url = settings.nats_url or "nats://127.0.0.1:4222"
    consumers = [(spec.name, spec.input_type) for spec in stage_specs(settings, Endpoints(nats_url=nats_url))]
    return build_asyncapi(VERSION, nats_url, consumers)
