"""The launch flow of one ``scheduled`` workload on this node, each step timed.

1. **start** — build the workload's initdata (KBS URL, image digest, the signature policy that
   trusts only the cosign key the KBS holds; :func:`ccpipe.stages.sign.release.workload_initdata`,
   which is :func:`~ccpipe.evidence.initdata.make_initdata`), check its digest against the
   ``signed`` event, and start the enclave: an evidence backend whose launch data
   (SNP HOST_DATA / TDX MRCONFIGID) is that digest → ``enclave.launched`` (launch measurement);
2. **attest** — RCAR with the KBS: a fresh ephemeral key per launch, bound with the nonce into
   report_data, the initdata sent along (the KBS publishes ``attestation.verified``/``rejected``);
3. **key** — the image key and the cosign public key, as KBS resources of the same session
   (the KBS publishes ``key.released``/``denied``);
4. **pull** — the image by digest from the registry the ``pushed`` event names, with its
   signature, every blob digest-checked;
5. **verify** — the cosign signature against the key from the KBS, for the pushed identity,
   **before** anything is decrypted;
6. **decrypt** — the layers, with the image key (HMAC and plaintext digests checked);
7. **unpack** — into a root, safely (:mod:`ccpipe.enclave_runner.unpack`);
8. **start**/**run** — once the start is claimed for this placement (``claim``, see
   :mod:`ccpipe.enclave_runner.run_claims`: a workload placed again while its first node was
   only slow starts once), in the sandbox → ``workload.running``, then ``workload.exited``.
   A launch whose claim another placement holds stops there and publishes nothing more.

Any failure publishes one ``failed`` event (stage ``runner``) with the error's code, message and
hint, and nothing after it runs; the workspace (decrypted content included) is removed in every
case. Events are de-duplicated on the ``scheduled`` event's id. No FastStream here: the caller
passes a ``publish`` function and an event lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.errors import ImageInvalid, ImagePullFailed, LaunchError, LaunchInputMissing
from ccpipe.enclave_runner.image import read_image
from ccpipe.enclave_runner.kbs import KbsSessionFactory, NodeSigner, fetch_launch_secrets
from ccpipe.enclave_runner.node import RunnerNode, start_enclave
from ccpipe.enclave_runner.sandbox.host_user import unprivileged_uid
from ccpipe.enclave_runner.sandbox.run import LimitPolicy, RunResult, check_limits, run_sandboxed
from ccpipe.enclave_runner.sandbox.spec import run_spec
from ccpipe.enclave_runner.steps import decrypt_pulled, pull_image, verify_pulled
from ccpipe.enclave_runner.unpack import unpack_layers
from ccpipe.enclave_runner.workspace import create_workspace
from ccpipe.oci.registry.auth import Credentials
from ccpipe.oci.registry.errors import RegistryAuthError
from ccpipe.pipeline.runtime import EventLookup
from ccpipe.pipeline.services import registry_credentials
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source, Subject, derived_msg_id
from ccpipe.schemas.errors import CcpipeError, InvalidInput, TransientError
from ccpipe.schemas.events import (
    EnclaveLaunched,
    EventType,
    Failed,
    ImageUnpacked,
    ImageVerified,
    Pushed,
    SandboxLimits,
    Scheduled,
    Signed,
    Submitted,
    WorkloadExited,
    WorkloadRunning,
)
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.sign.config import COSIGN_PUBKEY_TYPE, KBS_REPOSITORY, resource_path
from ccpipe.stages.sign.recipients import kbs_resource_uri
from ccpipe.stages.sign.release import workload_initdata

log = logging.getLogger("ccpipe.runner")

STAGE = "runner"
Publish = Callable[[Event, str], Awaitable[None]]
"""Stores one event with its de-duplication id."""
RunClaim = Callable[[str, str, float], Awaitable[bool]]
"""``claim(workload_id, scheduled_event_id, take_over_after_s)``: True if this placement may start
the workload (it claimed the start, or took over a claim older than ``take_over_after_s``, see
:mod:`ccpipe.enclave_runner.run_claims`); False while another placement holds it."""
RESTART_PATIENCE_S = 90.0
"""How long a pull waits for a registry that does not answer or refuses the credentials, and the
start's claim for NATS: longer than a restart of ``ccpipe up`` (which serves NATS and the embedded
registry, and gives the registry new passwords)."""
CLAIM_TAKE_OVER_S = 20.0
"""A claim whose workload has not started this long after it was taken was left by a node that died
between the claim and the start (a live node starts within a fraction of a second)."""
STEPS = ("attest", "key", "pull", "verify", "decrypt", "unpack", "start")


@dataclass
class LaunchReport:
    """How one launch went (also what the benchmark reads)."""

    workload_id: str
    timings: dict[str, float] = field(default_factory=dict)
    result: RunResult | None = None
    failure: FailureReason | None = None
    workspace_kind: str = ""
    sandbox_uid: int | None = None
    """Host uid the sandbox ran as (None: the runner's own)."""
    superseded: bool = False
    """Another placement of the workload started it first: this launch stopped before the start."""


@dataclass(frozen=True)
class LaunchInputs:
    """What the earlier stages said about the workload."""

    scheduled: Event
    pushed: Pushed
    signed: Signed
    spec: WorkloadSpec | None


@contextmanager
def _timed(report: LaunchReport, step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        report.timings[step] = round(report.timings.get(step, 0.0) + time.perf_counter() - start, 6)


async def gather_inputs(scheduled: Event, lookup: EventLookup) -> LaunchInputs:
    """The ``pushed``, ``signed`` and (if present) ``submitted`` events of the workload.

    Raises :class:`LaunchInputMissing` when ``pushed`` or ``signed`` is missing or they disagree.
    """
    wl = scheduled.workload_id
    try:
        pushed = (await lookup(wl, EventType.PUSHED)).payload
        signed = (await lookup(wl, EventType.SIGNED)).payload
    except CcpipeError as exc:
        if exc.code != "event.missing":
            raise
        raise LaunchInputMissing(f"workload {wl} cannot launch: {exc.message}") from exc
    if not isinstance(pushed, Pushed) or not isinstance(signed, Signed):
        raise LaunchInputMissing(f"workload {wl}: the pushed/signed events do not carry their payloads")
    if pushed.image_digest != signed.image_digest:
        raise LaunchInputMissing(
            f"workload {wl}: pushed image {pushed.image_digest} is not the signed image {signed.image_digest}"
        )
    spec: WorkloadSpec | None = None
    try:
        submitted = (await lookup(wl, EventType.SUBMITTED)).payload
        spec = submitted.spec if isinstance(submitted, Submitted) else None
    except CcpipeError:
        spec = None  # the run options then take their defaults
    return LaunchInputs(scheduled, pushed, signed, spec)


def launch_initdata(kbs_url: str, inputs: LaunchInputs) -> str:
    """The workload's initdata, as the sign stage registered its digest; raises :class:`LaunchError` if it differs."""
    pushed, wl = inputs.pushed, inputs.scheduled.workload_id
    identity = f"{pushed.registry}/{pushed.repository}"
    pubkey_uri = kbs_resource_uri(KBS_REPOSITORY, wl, COSIGN_PUBKEY_TYPE)
    text, digest_hex = workload_initdata(kbs_url, pushed.image_digest, identity, pubkey_uri)
    if digest_hex != inputs.signed.initdata_digest:
        raise LaunchError(
            f"the initdata this node builds for {wl} has digest {digest_hex}, the signed event registered "
            f"{inputs.signed.initdata_digest}",
            hint="the runner must use the KBS URL and registry the sign stage used (ccpipe endpoints)",
            code="runner.initdata.mismatch",
        )
    return text


class _Superseded(Exception):
    """Another placement of the workload claimed its start first."""


class Launcher:
    """Runs launches for one node (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        node: RunnerNode,
        *,
        kbs_url: str,
        publish: Publish,
        lookup: EventLookup,
        kbs_session: KbsSessionFactory | None = None,
        node_signer: NodeSigner | None = None,
        registry_tls: bool | None = None,
        registry_ca: Path | None = None,
        claim: RunClaim | None = None,
    ) -> None:
        self.settings, self.node, self.kbs_url = settings, node, kbs_url
        self.publish, self.lookup, self.kbs_session = publish, lookup, kbs_session
        self.claim = claim
        """Asked right before the start; None (a single node, the benchmarks): every launch starts."""
        self.node_signer = node_signer
        """The node key's signer: the KBS attributes a release to this node only with its proof."""
        self.registry_tls = settings.registry_tls if registry_tls is None else registry_tls
        self.registry_ca = registry_ca if registry_ca is not None else settings.registry_ca

    def _event(self, etype: EventType, scheduled: Event, payload: object, image_digest: str | None,
               causation: str) -> Event:
        return Event(
            type=etype, workload_id=scheduled.workload_id,
            source=Source(component=STAGE, instance=self.node.node_id),
            subject=Subject(image_digest=image_digest, node=self.node.node_id),
            causation_id=causation, payload=payload,
        )

    async def _emit(self, etype: EventType, scheduled: Event, payload: object, image_digest: str | None,
                    causation: str) -> Event:
        event = self._event(etype, scheduled, payload, image_digest, causation)
        await self.publish(event, derived_msg_id(scheduled.workload_id, etype, scheduled.id))
        return event

    async def launch(self, scheduled: Event) -> LaunchReport:
        """Run the whole flow for one ``scheduled`` event; never raises for a workload failure.

        A failure is published as one ``failed`` event and returned in the report; only a
        failure to publish (NATS down) propagates (``TransientError``).
        """
        report = LaunchReport(scheduled.workload_id)
        try:
            await self._launch(scheduled, report)
        except _Superseded:
            # the workload runs (or ran) under its other placement: nothing of this launch ends it
            report.superseded = True
            log.warning("runner %s: %s was started by another placement first; this launch (%s) stops before "
                        "the start", self.node.node_id, scheduled.workload_id, scheduled.id)
        except CcpipeError as exc:
            report.failure = exc.reason(STAGE)
        except Exception as exc:  # a defect: still one failed event, never a silent drop
            log.exception("runner %s: launch of %s crashed", self.node.node_id, scheduled.workload_id)
            report.failure = FailureReason(
                stage=STAGE, code="runner.internal", message=f"the runner raised {type(exc).__name__}: {exc}",
                hint="this is a defect in the runner; report it with the scheduled event id",
            )
        if report.failure is not None:
            log.warning("runner %s: %s failed: %s", self.node.node_id, scheduled.workload_id, report.failure.message)
            failed = Failed(reason=report.failure, input_event_id=scheduled.id, input_type=scheduled.type.value)
            await self._emit(EventType.FAILED, scheduled, failed, None, scheduled.id)
        return report

    async def _launch(self, scheduled: Event, report: LaunchReport) -> None:
        sched = scheduled.payload
        if not isinstance(sched, Scheduled):
            raise LaunchInputMissing(f"the runner got a {scheduled.type.value} event instead of scheduled")
        inputs = await gather_inputs(scheduled, self.lookup)
        digest = inputs.pushed.image_digest
        initdata = launch_initdata(self.kbs_url, inputs)
        enclave = await asyncio.to_thread(start_enclave, self.settings.data_dir, self.node, initdata)
        launched = await self._emit(
            EventType.ENCLAVE_LAUNCHED, scheduled,
            EnclaveLaunched(node_id=self.node.node_id, tee=enclave.tee, backend=enclave.backend_name,
                            launch_measurement=enclave.measurement_hex),
            digest, scheduled.id,
        )
        host_uid = unprivileged_uid() if self.node.unprivileged_sandbox else None
        workspace = await asyncio.to_thread(
            create_workspace, self.settings.data_dir, f"{scheduled.workload_id}-{secrets.token_hex(16)}",
            needed_bytes=self.node.workspace_bytes, traversable=host_uid is not None,
        )
        report.workspace_kind = workspace.kind
        if host_uid is not None and not workspace.others_can_traverse():
            log.warning("runner %s: %s is not reachable by an unprivileged sandbox; the sandbox runs as the runner",
                        self.node.node_id, workspace.path)
            host_uid = None
        try:
            pull_credentials = registry_credentials(self.settings, "pull")  # a bad password file fails before keys
            policy = LimitPolicy(best_effort=self.settings.sandbox_limits == "best-effort",
                                 delegated_cgroup=self.settings.sandbox_cgroup)
            await check_limits(self.node.limits, host_uid=host_uid, policy=policy)  # before any key is released
            released = await fetch_launch_secrets(
                self.kbs_url, enclave.backend, initdata, scheduled.workload_id, enclave.tee,
                node_id=self.node.node_id, node_signer=self.node_signer, factory=self.kbs_session,
                timings=report.timings,
            )
            with _timed(report, "pull"):
                await self._pull(inputs.pushed, workspace.pulled, pull_credentials)
            with _timed(report, "verify"):
                await asyncio.to_thread(verify_pulled, workspace.pulled, inputs.pushed, released.cosign_pubkey)
            await self._emit(
                EventType.IMAGE_VERIFIED, scheduled,
                ImageVerified(node_id=self.node.node_id, image_digest=digest, reference=inputs.pushed.reference,
                              signer_key_digest="sha256:" + hashlib.sha256(released.cosign_pubkey).hexdigest(),
                              signer_key_resource=resource_path(scheduled.workload_id, COSIGN_PUBKEY_TYPE)),
                digest, launched.id,
            )
            with _timed(report, "decrypt"):
                plain_digest = await asyncio.to_thread(
                    decrypt_pulled, workspace.pulled, workspace.plain, digest, inputs.signed.key_resource,
                    released.take_image_key(),
                )
            for layout in (workspace.pulled, workspace.plain):
                os.chmod(layout, 0o700)  # only the root is handed to the sandbox's uid
            with _timed(report, "unpack"):
                image = await asyncio.to_thread(read_image, workspace.plain, plain_digest)
                stats = await asyncio.to_thread(unpack_layers, image.layers, workspace.rootfs,
                                                limits=self.node.unpack_limits)
            await self._emit(
                EventType.IMAGE_UNPACKED, scheduled,
                ImageUnpacked(node_id=self.node.node_id, image_digest=digest, plain_image_digest=plain_digest,
                              layers=stats.layers, entries=stats.entries, bytes_written=stats.bytes_written,
                              whiteouts=stats.whiteouts, stripped_modes=stats.stripped_modes),
                digest, launched.id,
            )
            network = bool(inputs.spec and inputs.spec.run.network)
            spec = run_spec(workspace.rootfs, image.config, network=network)
            await self._claim_start(scheduled)
            started = time.perf_counter()
            running: list[Event] = []

            async def on_start(applied: SandboxLimits) -> None:
                report.timings["start"] = round(time.perf_counter() - started, 6)
                running.append(await self._emit(
                    EventType.WORKLOAD_RUNNING, scheduled,
                    WorkloadRunning(node_id=self.node.node_id, image_digest=digest, limits=applied),
                    digest, launched.id,
                ))

            report.sandbox_uid = host_uid
            result = await run_sandboxed(workspace.rootfs, spec, self.node.limits, on_start=on_start,
                                         host_uid=host_uid, policy=policy)
            report.result = result
            report.timings["run"] = round(result.duration_s, 6)
            self._keep_log(scheduled, result)
            await self._emit(
                EventType.WORKLOAD_EXITED, scheduled,
                WorkloadExited(node_id=self.node.node_id, exit_code=result.exit_code, duration_s=result.duration_s,
                               output_digest=result.log_digest, timed_out=result.timed_out,
                               timings_s=dict(report.timings)),
                digest, running[0].id if running else launched.id,
            )
        finally:
            await asyncio.to_thread(workspace.remove)

    async def _pull(self, pushed: Pushed, layout: Path, credentials: Credentials | None) -> None:
        """Pull the image; a registry that does not answer, or refuses the credentials read at the
        launch's start, is tried again (credentials read anew) for up to :data:`RESTART_PATIENCE_S`:
        a restarted embedded registry is down for a while and comes back with new passwords."""
        deadline, pause = time.monotonic() + RESTART_PATIENCE_S, 0.4
        while True:
            try:
                await pull_image(pushed, layout, tls=self.registry_tls, ca=self.registry_ca, credentials=credentials)
                return
            except (ImagePullFailed, ImageInvalid) as exc:
                again = isinstance(exc, ImagePullFailed) or isinstance(exc.__cause__, RegistryAuthError)
                if not again or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)
            credentials = registry_credentials(self.settings, "pull")

    async def _claim_start(self, scheduled: Event) -> None:
        """Return once this placement may start the workload; raise :class:`_Superseded` once
        another placement has started it (its ``workload.running`` is on the trail)."""
        if self.claim is None:
            return
        deadline = time.monotonic() + 2 * CLAIM_TAKE_OVER_S
        unreachable_until = time.monotonic() + RESTART_PATIENCE_S
        while True:
            try:
                if await self.claim(scheduled.workload_id, scheduled.id, CLAIM_TAKE_OVER_S):
                    return
                await self.lookup(scheduled.workload_id, EventType.WORKLOAD_RUNNING)
            except InvalidInput:  # not started (yet): the holder may still start it, or have died
                if time.monotonic() > deadline:
                    raise _Superseded from None
            except TransientError:  # NATS away (a restart of ccpipe up): wait for it, then fail the launch
                if time.monotonic() > unreachable_until:
                    raise
                deadline = max(deadline, time.monotonic() + CLAIM_TAKE_OVER_S)
            else:
                raise _Superseded
            await asyncio.sleep(1.0)

    def _keep_log(self, scheduled: Event, result: RunResult) -> None:
        """Keep the bounded log beside the data dir, named by its digest (what ``exited`` carries)."""
        logs = self.settings.data_dir / "runner" / "logs" / scheduled.workload_id
        try:
            logs.mkdir(parents=True, exist_ok=True, mode=0o700)
            (logs / f"{result.log_digest.replace(':', '-')}.log").write_bytes(result.log)
        except OSError as exc:  # the run happened; a full disk must not turn it into a failure
            log.warning("runner %s: cannot keep the log of %s: %s", self.node.node_id, scheduled.workload_id, exc)


__all__ = ["STEPS", "EventLookup", "LaunchInputs", "LaunchReport", "Launcher", "Publish",
           "gather_inputs", "launch_initdata"]
