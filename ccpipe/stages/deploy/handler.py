"""Deploy stage handlers: ``signed`` → ``pushed`` (push) and ``pushed`` → ``scheduled`` (schedule).

Thin: each turns the input event into a call of the pure core and the result into outputs.

* push — reads the workload's spec from its ``submitted`` event, pushes image, signature and
  attestations to ``ccpipe/<workload name>`` in the registry (tag = workload id) and emits
  ``pushed``. Registry failures that may pass are :class:`TransientError` (retried by the
  runtime); a layout that does not match the event fails the workload.
* schedule — picks the least-loaded node whose TEE fits and emits ``scheduled``; when none
  fits it emits ``scheduling.pending`` (not a failure), and the scheduler service
  (:mod:`ccpipe.stages.deploy.scheduler_service`) places the workload when a node appears. With
  ``CCPIPE_K8S_MANIFEST_DIR`` set it also writes the workload's CoCo Pod manifest there.

Both need the trail and the node inventory, which they read over their stage's own runtime
connection (:class:`~ccpipe.pipeline.runtime.StageBus`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from nats.js import JetStreamContext

from ccpipe.oci.cosign_names import repository_for
from ccpipe.oci.registry import RegistryClient
from ccpipe.pipeline.artifacts import ARTIFACT_MISSING, ArtifactError, fetch_layout, forget_artifact, layout_ref
from ccpipe.pipeline.event_trust import InputTrust, input_trust
from ccpipe.pipeline.reader import read_events, workload_event
from ccpipe.pipeline.registry_gc import pushing
from ccpipe.pipeline.runtime import Output, StageBus, StageSpec
from ccpipe.pipeline.services import Endpoints, registry_credentials
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Signed, Submitted
from ccpipe.schemas.workload import TeeRequirements, WorkloadSpec
from ccpipe.stages.deploy.admission import NodeGate
from ccpipe.stages.deploy.inventory_kv import list_admitted_nodes, nodes_bucket
from ccpipe.stages.deploy.k8s_trail import manifest_from_events, write_manifest
from ccpipe.stages.deploy.placements_kv import place, placements_bucket
from ccpipe.stages.deploy.push_signed import push_signed, pushed_before
from ccpipe.stages.deploy.scheduler import Placement, PlacementView, decision_payload
from ccpipe.stages.deploy.trail import refresh_view

T = TypeVar("T")
log = logging.getLogger("ccpipe.deploy")


def _payload(event: Event, model: type[T]) -> T:
    if not isinstance(event.payload, model):
        raise InvalidInput(
            f"event {event.id} of type {event.type.value} does not carry a {model.__name__} payload",
            code="deploy.input.invalid",
        )
    return event.payload


async def submitted_spec(js: JetStreamContext, workload_id: str, trust: InputTrust) -> WorkloadSpec:
    """The workload's spec, from its ``submitted`` event (raises :class:`InvalidInput` if absent or untrusted)."""
    first = await workload_event(js, workload_id, EventType.SUBMITTED, trust=trust)
    return _payload(first, Submitted).spec


def registry_client(settings: Settings, endpoints: Endpoints) -> RegistryClient:
    """A client of the configured registry; raises :class:`ConfigurationError` when there is none."""
    registry = endpoints.registry or settings.registry
    if not registry:
        raise ConfigurationError(
            "no OCI registry is configured for the push step",
            hint="set CCPIPE_REGISTRY or run the embedded default with 'ccpipe up'",
            code="deploy.registry.unconfigured",
        )
    return RegistryClient(
        registry, plain_http=not settings.registry_tls, ca_file=settings.registry_ca,
        credentials=registry_credentials(settings, "push"),
    )


async def write_k8s_manifest(
    js: JetStreamContext, settings: Settings, endpoints: Endpoints, workload_id: str, placement: Placement
) -> Path | None:
    """Write the workload's Pod manifest into ``settings.k8s_manifest_dir`` (if set); returns its path.

    A side output of a placement: what prevents it (no KBS URL, an unwritable directory) is
    logged and the placement stands. Raises nothing but :class:`TransientError` from NATS.
    """
    directory = settings.k8s_manifest_dir
    kbs_url = endpoints.kbs_url or settings.kbs_url
    if directory is None:
        return None
    if kbs_url is None:
        log.warning("no KBS URL is known: no Kubernetes manifest written for %s", workload_id)
        return None
    trust = input_trust(settings.data_dir)
    events = [e for s in await read_events(js, workload_id) if s.event is not None and (e := s.trusted_by(trust))]
    try:
        result = manifest_from_events(
            workload_id, events, kbs_url=kbs_url, tee=placement.node.tee, emulated=placement.node.emulated
        )
        path = write_manifest(directory, workload_id, result)
    except (InvalidInput, OSError) as exc:
        log.warning("Kubernetes manifest for %s not written: %s", workload_id, exc)
        return None
    log.info("Kubernetes manifest for %s written to %s", workload_id, path)
    return path


async def provision_deploy_buckets(js: JetStreamContext) -> None:
    """Create the node inventory and the slot reservations buckets if absent: the provisioning
    step of ``ccpipe up``'s admin identity (the scheduler and runners may only open them)."""
    await nodes_bucket(js)
    await placements_bucket(js)


def deploy_stages(settings: Settings, endpoints: Endpoints) -> list[StageSpec]:
    """The deploy stage's steps: ``push`` (signed → pushed) and ``schedule`` (pushed → scheduled/pending)."""
    push_nats, schedule_nats = StageBus(), StageBus()
    gate = NodeGate(log)  # only attested nodes, by their verified TEE facts
    view = PlacementView()
    trust = input_trust(settings.data_dir)

    async def push(event: Event) -> Sequence[Output]:
        signed = _payload(event, Signed)
        fetched = settings.data_dir / "artifacts" / event.workload_id / "signed"
        used = layout_ref(settings.data_dir, signed.layout)
        # the embedded registry's garbage collection waits for this push (see registry_gc)
        collected = settings.data_dir / "registry" if settings.embedded_registry else None
        try:
            async with push_nats.session() as js:
                spec = await submitted_spec(js, event.workload_id, trust)
            repository = repository_for(spec.workload.name)
            async with pushing(collected), registry_client(settings, endpoints) as client:
                try:
                    async with push_nats.session() as js:
                        # the signed layout, by the digest the signed event names
                        here = Path(signed.layout) if used is None else await fetch_layout(js, used, fetched)
                except ArtifactError as exc:
                    # purged by an earlier attempt that pushed everything and was killed before
                    # `pushed` was stored: the registry holds what it pushed
                    result = await pushed_before(client, signed, repository) if exc.code == ARTIFACT_MISSING else None
                    if result is None:
                        raise
                else:
                    result = await push_signed(client, signed.model_copy(update={"layout": str(here)}), repository,
                                               event.workload_id)
            if used is not None:
                # purged at once (megabytes of ciphertext per workload): a redelivery finds the push in the
                # registry (above); what a failed purge leaves goes with the bucket's max age
                async with push_nats.session() as js:
                    await forget_artifact(js, used)
        finally:
            await asyncio.to_thread(shutil.rmtree, fetched.parent, True)
        subject = event.subject.model_copy(update={"image_digest": signed.image_digest})
        return [Output(EventType.PUSHED, result.pushed, subject)]

    async def schedule(event: Event) -> Sequence[Output]:
        _payload(event, Pushed)
        async with schedule_nats.session() as js:
            await refresh_view(js, view, trust)
            known = view.workloads.get(event.workload_id)
            requirements: TeeRequirements | None = known.requirements if known else None
            if requirements is None:  # the trail view has not seen its submitted event
                requirements = (await submitted_spec(js, event.workload_id, trust)).tee
            nodes = await list_admitted_nodes(js, gate)
            decision = await place(js, nodes, requirements, view, workload_id=event.workload_id, attempt=1,
                                   allow_emulated=settings.allow_emulated)
        etype, payload = decision_payload(decision, attempt=1)
        subject = event.subject
        if isinstance(payload, Scheduled):
            subject = subject.model_copy(update={"node": payload.node_id})
            if settings.k8s_manifest_dir is not None and isinstance(decision, Placement):
                async with schedule_nats.session() as js:
                    await write_k8s_manifest(js, settings, endpoints, event.workload_id, decision)
        return [Output(etype, payload, subject)]

    return [
        StageSpec(
            name="push", input_type=EventType.SIGNED, output_types=(EventType.PUSHED,), handler=push, bus=push_nats,
            description="Push the signed image, its cosign signature and attestations to the registry.",
            hint="check the registry (CCPIPE_REGISTRY) and the signed layout",
        ),
        StageSpec(
            name="schedule", input_type=EventType.PUSHED,
            output_types=(EventType.SCHEDULED, EventType.SCHEDULING_PENDING), handler=schedule, bus=schedule_nats,
            description="Place the workload on a node whose TEE fits, or say why it waits.",
            hint="check the node inventory with 'ccpipe nodes'",
        ),
    ]
