"""The build stage's handler: ``submitted`` → checkout, build, provenance, runner evidence → ``built``.

Where components are enrolled the ``submitted`` event's ``repo`` is the pushed commit stored sealed
to this stage (:mod:`ccpipe.pipeline.source_bundles`): it is fetched by digest, unpacked into a
temporary bare repository and built; it is purged once ``built`` is stored (or the build failed for
good). A redelivery whose source is already gone (a build replica killed after that purge, before
acknowledging) is answered with the ``built`` the trail holds for it. A local path is refused there. In a data directory
without an admin key ``repo`` is a local path, read as it is.

The work itself is :func:`ccpipe.stages.build.runner.attested_build` (pure, blocking), run in a worker
thread so the event loop keeps serving other deliveries. The runtime (``ccpipe.pipeline.runtime``)
acks, retries a :class:`~ccpipe.schemas.errors.TransientError`, and turns any other
:class:`~ccpipe.schemas.errors.CcpipeError` (an unreadable repository or ref, a bad recipe, a
forbidden base) into one ``failed`` event.

Configuration: :class:`~ccpipe.stages.build.config.BuildConfig` (``CCPIPE_BUILD_TEE_BACKEND``,
``CCPIPE_BUILD_BASES_DIR``, ``CCPIPE_BUILD_WORK_DIR``). Absolute ``oci:`` bases are read only
from the bases directory (``<data_dir>/bases`` by default); the demo busybox base there is made
on first use. ``REGISTRY/REPO@sha256:…`` bases are read only from the pipeline's registry
(``endpoints.registry``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.evidence.interface import BackendSelector, EvidenceBackend
from ccpipe.pipeline.artifacts import (
    ARTIFACT_MISSING,
    ArtifactError,
    ArtifactRef,
    forget_artifact,
    load_or_create_sealing_key,
    sealing_recipients,
    store_layout,
)
from ccpipe.pipeline.runtime import Output, StageBus, StageSpec, trail_lookup
from ccpipe.pipeline.services import Endpoints, registry_credentials
from ccpipe.pipeline.source_bundles import fetch_source, source_ref
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Subject
from ccpipe.schemas.errors import CcpipeError, InvalidInput, TransientError
from ccpipe.schemas.events import Built, EventType, Submitted
from ccpipe.stages.build.base.fs_index import BaseIndexCache
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.config import BuildConfig, bases_dir, load_build_config, workload_image_dir
from ccpipe.stages.build.registry_base import RegistryFetch
from ccpipe.stages.build.runner import attested_build

STAGE_NAME = "build"


def build_stages(
    settings: Settings,
    endpoints: Endpoints,
    config: BuildConfig | None = None,
    *,
    select_backend: BackendSelector,
) -> list[StageSpec]:
    """The ``build`` stage: input ``submitted``, output ``built``.

    ``config`` defaults to the ``CCPIPE_BUILD_*`` environment. ``select_backend`` makes the build
    runner's evidence backend (the assembly passes the node agent's
    ``ccpipe.enclave_runner.tee.select_backend``, so this stage imports only the interface). Raises
    :class:`~ccpipe.schemas.errors.ConfigurationError` for a bad configuration (before anything runs).
    """
    cfg = config or load_build_config()
    bus = StageBus()
    bases = bases_dir(settings.data_dir, cfg)
    # one index cache for every build of this stage: a base is decompressed once, not once per build
    sources = BaseSources(oci_roots=(bases,), index_cache=BaseIndexCache())
    backends: list[EvidenceBackend] = []

    def backend() -> EvidenceBackend:
        # made on first use: the emulated backend creates its roots under the data directory
        if not backends:
            backends.append(select_backend(settings.data_dir, prefer=cfg.tee_backend))
        return backends[0]

    def run(event: Event, payload: Submitted, repo: Path | str, bases_from: BaseSources) -> Output:
        done = attested_build(
            repo,
            payload.ref,
            workload_image_dir(settings.data_dir, event.workload_id, "plain"),
            backend=backend(),
            commit=payload.new_commit,
            workload_id=event.workload_id,
            bases=bases_from,
            work_root=cfg.work_dir,
            demo_bases=bases,
            repository=payload.repo,
        )
        subject = Subject(commit=done.result.commit, image_digest=done.built.image_digest)
        return Output(EventType.BUILT, done.built, subject=subject)

    async def on_submitted(event: Event) -> Sequence[Output]:
        """Build the pushed commit reproducibly and attest its provenance with the runner's TEE."""
        if not isinstance(event.payload, Submitted):
            raise InvalidInput(f"the build stage got a {event.type.value} event", code="build.input")
        # registry bases: only from the pipeline's registry, fetched on this loop for the build's thread
        allowed = (endpoints.registry,) if endpoints.registry else ()
        fetch = RegistryFetch(asyncio.get_running_loop(), allowed, plain_http=not settings.registry_tls,
                              ca_file=settings.registry_ca, credentials=registry_credentials(settings, "pull"),
                              work_dir=cfg.work_dir)  # fmt: skip
        bases_from = replace(sources, fetch_blob=fetch)
        payload = event.payload
        # where components are enrolled the source arrives only by digest, sealed to this stage
        source = await asyncio.to_thread(source_ref, settings.data_dir, payload.repo)
        if source is None:  # a local path: one host, a data directory without an admin key
            out = await asyncio.to_thread(run, event, payload, payload.repo, bases_from)
            return [await _handed_on(out, event.workload_id)]
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ccpipe-source-", dir=cfg.work_dir))
        try:
            try:
                async with bus.session() as js:
                    repo = await fetch_source(js, source, work / "repo.git", await asyncio.to_thread(sealing_key),
                                              payload.new_commit, payload.ref)
            except ArtifactError as exc:
                if exc.code == ARTIFACT_MISSING and (earlier := await _built_before(event)) is not None:
                    return [earlier]
                raise
            out = await asyncio.to_thread(run, event, payload, repo, bases_from)
            handed = await _handed_on(out, event.workload_id)
        except CcpipeError as exc:
            if not isinstance(exc, TransientError):
                await _forget(source)  # the workload fails for good: nothing will read it again
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        # purged only once `built` is stored (after_stored): a build replica killed before that
        # leaves the input to be redelivered to another one, which needs the source again
        return [handed]

    lookup = trail_lookup(settings, bus, STAGE_NAME)

    async def _built_before(event: Event) -> Output | None:
        # the source is purged only after `built` is stored: if this input's `built` is there, a
        # replica finished it and was killed before acknowledging; its output is published again
        # (the same message id, so the stream keeps the first) instead of failing the workload
        try:
            built = await lookup(event.workload_id, EventType.BUILT)
        except InvalidInput:
            return None
        if built.causation_id != event.id or not isinstance(built.payload, Built):
            return None
        return Output(EventType.BUILT, built.payload, subject=built.subject)

    async def _purge_source(event: Event) -> None:
        payload = event.payload
        if isinstance(payload, Submitted):
            source = await asyncio.to_thread(source_ref, settings.data_dir, payload.repo)
            if source is not None:
                await _forget(source)

    def sealing_key() -> ec.EllipticCurvePrivateKey:
        return load_or_create_sealing_key(settings.data_dir, STAGE_NAME)

    async def _forget(source: ArtifactRef) -> None:
        # the consumer purges what it used (a failure is only logged: the bucket's max age removes it)
        async with bus.session() as js:
            await forget_artifact(js, source)

    async def _handed_on(out: Output, workload_id: str) -> Output:
        # the plaintext layout leaves this host only sealed to the sign stage's enrolled keys, by digest
        built = out.payload
        assert isinstance(built, Built)
        recipients = await asyncio.to_thread(sealing_recipients, settings.data_dir, "sign")
        async with bus.session() as js:
            ref = await store_layout(js, workload_id, "plain", Path(built.layout), seal_to=recipients)
        await asyncio.to_thread(shutil.rmtree, built.layout, True)
        return replace(out, payload=built.model_copy(update={"layout": str(ref)}))

    return [
        StageSpec(
            name=STAGE_NAME,
            input_type=EventType.SUBMITTED,
            output_types=(EventType.BUILT,),
            handler=on_submitted,
            description=on_submitted.__doc__ or "",
            bus=bus,
            after_stored=_purge_source,
        )
    ]
