"""The sign stage's handler: build-runner ``attestation.verified`` → encrypt, sign, register → ``signed``.

The sign stage signs only an image whose build-runner attestation the attestation service
verified: its input is ``attestation.verified``; events of any other purpose are ignored, and
one whose claims do not bind the ``built`` provenance fails the workload. The ``built`` event
(and the ``submitted`` one, whose spec's ``[tee]`` requirements go to the KBS with the key)
is read back from the trail (``ccpipe.pipeline.reader.workload_event``, signatures checked) over
the stage's own runtime connection (:class:`~ccpipe.pipeline.runtime.StageBus`). The image signed
must be the subject of the provenance the attestation bound
(:func:`ccpipe.stages.sign.workload.check_image_is_provenance_subject`).

The work is :func:`ccpipe.stages.sign.workload.sign_workload`, at most once per workload across
every replica (:class:`ccpipe.stages.sign.once.SignOnce` on the KV markers of
:mod:`ccpipe.stages.sign.markers_kv`): a redelivery of the input gets the same ``signed`` payload,
and any other attestation for a signed workload is refused with a ``failed`` event
(``sign.already_signed``), so the image key in the KBS is never replaced behind a published
``signed``. Keys and reference values go to the KBS through
:class:`ccpipe.stages.sign.kbs.LazyAdminRegistrar` at ``endpoints.kbs_url``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import JetStreamContext

from ccpipe.pipeline.artifacts import (
    fetch_layout,
    forget_artifact,
    layout_ref,
    load_or_create_sealing_key,
    store_layout,
)
from ccpipe.pipeline.runtime import EventLookup, Output, StageBus, StageSpec, trail_lookup
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Subject
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.events import AttestationVerified, Built, EventType, Signed, Submitted
from ccpipe.stages.build.config import workload_image_dir
from ccpipe.stages.sign.config import SignConfig, load_sign_config, signing_key_prefix
from ccpipe.stages.sign.cosign import Signer
from ccpipe.stages.sign.kbs import KbsRegistrar, LazyAdminRegistrar
from ccpipe.stages.sign.keys import PrivateKey, load_or_create_keys
from ccpipe.stages.sign.markers_kv import KvMarkers, sign_markers_bucket
from ccpipe.stages.sign.once import MarkerStore, SignOnce
from ccpipe.stages.sign.release import launch_reference_values
from ccpipe.stages.sign.workload import (
    ProvenanceNotAttested,
    SignContext,
    binds_provenance,
    check_image_is_provenance_subject,
    remove_plaintext,
    sign_workload,
)

STAGE_NAME = "sign"
BUILD_RUNNER_PURPOSE = "build-runner"

async def provision_sign_buckets(js: JetStreamContext) -> None:
    """Create the sign stage's markers bucket if absent: the provisioning step of ``ccpipe up``'s admin identity."""
    await sign_markers_bucket(js)


def kv_markers(bus: StageBus) -> KvMarkers:
    """The sign markers in NATS KV, over the sign stage's own runtime connection."""
    return KvMarkers(bus.session)


def sign_stages(
    settings: Settings,
    endpoints: Endpoints,
    *,
    config: SignConfig | None = None,
    registrar: KbsRegistrar | None = None,
    lookup: EventLookup | None = None,
    signer: tuple[PrivateKey | Signer, bytes] | None = None,
    markers: MarkerStore | None = None,
) -> list[StageSpec]:
    """The ``sign`` stage: input ``attestation.verified`` (build-runner), output ``signed``.

    ``registrar``, ``lookup``, ``signer`` (key, public PEM) and ``markers`` default to the KBS
    admin API at ``endpoints.kbs_url``, the trail at ``endpoints.nats_url``, the pipeline's cosign
    key under ``<data_dir>/keys/sign/`` (created on first use) and the KV markers. Raises :class:`ConfigurationError`
    for a bad ``CCPIPE_SIGN_*`` configuration.
    """
    cfg = config or load_sign_config()
    bus = StageBus()
    find = lookup or trail_lookup(settings, bus, STAGE_NAME)
    # a claim twice as old as the redelivery delay was left by a delivery that died
    once = SignOnce(markers or kv_markers(bus), stale_after_s=2 * settings.ack_wait_s)
    registrars: list[KbsRegistrar] = [registrar] if registrar is not None else []

    @functools.cache
    def pipeline_key() -> tuple[PrivateKey, bytes]:
        return load_or_create_keys(signing_key_prefix(settings.data_dir), cfg.key_password)

    def signing_key() -> tuple[PrivateKey | Signer, bytes]:
        if signer is not None:
            return signer
        if cfg.keyless:
            # per workload: the token file is read again (tokens are short-lived), a fresh certificate
            from ccpipe.stages.sign.keyless import keyless_signer  # sigstore takes ~0.7 s to import: only when used

            return keyless_signer(cfg, data_dir=settings.data_dir)
        return pipeline_key()

    @functools.cache
    def sealing_key() -> ec.EllipticCurvePrivateKey:
        return load_or_create_sealing_key(settings.data_dir, STAGE_NAME)

    @functools.cache
    def launch_values() -> dict[str, list[Any]] | None:
        # hashes the runner's package once per process
        return launch_reference_values(cfg.launch_config_value()) if cfg.register_measurement else None

    def kbs() -> tuple[str, KbsRegistrar]:
        if endpoints.kbs_url is None:
            raise ConfigurationError(
                "the sign stage has no KBS to register image keys with",
                hint="run the KBS (ccpipe up starts one) or set CCPIPE_KBS_URL",
                code="sign.kbs.missing",
            )
        if not registrars:
            registrars.append(LazyAdminRegistrar(endpoints.kbs_url, settings.data_dir))
        return endpoints.kbs_url, registrars[0]

    async def on_attestation_verified(event: Event) -> Sequence[Output]:
        """Encrypt, sign and register the image whose build-runner attestation was verified."""
        payload = event.payload
        if not isinstance(payload, AttestationVerified):
            raise InvalidInput(f"the sign stage got a {event.type.value} event", code="sign.input")
        if payload.purpose != BUILD_RUNNER_PURPOSE:
            return []  # an enclave's attestation, not the build runner's
        built_event = await find(event.workload_id, EventType.BUILT)
        built = built_event.payload
        if not isinstance(built, Built):
            raise InvalidInput(f"the built event of {event.workload_id} has no built payload", code="sign.input")
        if not binds_provenance(built, payload.claims, payload.evidence_digest):
            raise ProvenanceNotAttested(
                f"the verified build-runner attestation of {event.workload_id} does not bind "
                f"the provenance {built.provenance_digest} of image {built.image_digest}"
            )
        submitted = (await find(event.workload_id, EventType.SUBMITTED)).payload
        if not isinstance(submitted, Submitted):
            raise InvalidInput(f"the submitted event of {event.workload_id} has no workload spec", code="sign.input")
        kbs_url, reg = kbs()
        key, pub = await asyncio.to_thread(signing_key)
        # a keyless signer says how guests check it (CA, issuer, identity); a key is fetched from the KBS
        requirement_of = getattr(key, "policy_requirement", None)
        requirement = requirement_of() if callable(requirement_of) else None
        ctx = SignContext(
            data_dir=settings.data_dir,
            kbs_url=kbs_url,
            signer=key,
            public_key_pem=pub,
            registry=endpoints.registry,
            launch_values=await asyncio.to_thread(launch_values),
            signature_requirement=requirement,
        )
        tee = submitted.spec.tee
        plain = workload_image_dir(settings.data_dir, event.workload_id, "plain")
        # the pipeline hands layouts on by digest; a local path (library use, one host) stays one
        used = layout_ref(settings.data_dir, built.layout)
        here = built.model_copy(update={"layout": str(plain)}) if used is not None else built

        async def sign_now() -> Signed:
            if used is not None:  # the build output the signed `built` names, unsealed with this host's key
                async with bus.session() as js:
                    await fetch_layout(js, used, plain, unseal_with=await asyncio.to_thread(sealing_key))
            # checked where the signing happens: a redelivery after it finds the plaintext removed
            check_image_is_provenance_subject(here)
            signed = await sign_workload(here, event.workload_id, tee, ctx, reg)
            if used is None:
                return signed
            # the encrypted image goes on by digest too (its layers are ciphertext: not sealed)
            async with bus.session() as js:
                ref = await store_layout(js, event.workload_id, "signed", Path(signed.layout))
            return signed.model_copy(update={"layout": str(ref)})

        signed = await once.run(event.workload_id, event.id, sign_now)
        # after the marker holds the result, not before: a retry of a failed attempt encrypts the plaintext again
        await asyncio.to_thread(remove_plaintext, here, event.workload_id, settings.data_dir)
        if used is not None:
            async with bus.session() as js:
                await forget_artifact(js, used)
        return [_output(signed)]

    return [
        StageSpec(
            name=STAGE_NAME,
            input_type=EventType.ATTESTATION_VERIFIED,
            output_types=(EventType.SIGNED,),
            handler=on_attestation_verified,
            description=on_attestation_verified.__doc__ or "",
            bus=bus,
        )
    ]


def _output(signed: Signed) -> Output:
    return Output(
        EventType.SIGNED, signed, subject=Subject(image_digest=signed.image_digest, key_id=signed.key_resource)
    )
