"""The sign stage's handler: build-runner ``attestation.verified`` → encrypt, sign, register → ``signed``.

The sign stage signs only an image whose build-runner attestation the attestation service
verified: its input is ``attestation.verified``; events of any other purpose are ignored, and
one whose claims do not bind the ``built`` provenance fails the workload. The ``built`` event
(and the ``submitted`` one, whose spec's ``[tee]`` requirements go to the KBS with the key)
is read back from the trail (``ccpipe.pipeline.reader.workload_event``) over a short NATS connection
per lookup. If a ``signed`` event already exists for the workload (a
redelivery after the output was stored), it is returned as is: the image key in the KBS is never
replaced behind a published ``signed``.

The work is :func:`ccpipe.stages.sign.workload.sign_workload_once` (at most once per workload); keys
and reference values go to the KBS through :class:`ccpipe.stages.sign.kbs.LazyAdminRegistrar` at
``endpoints.kbs_url``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.errors import Error as NatsError

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.runtime import Output, StageSpec
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component
from ccpipe.schemas.envelope import Event, Subject
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError
from ccpipe.schemas.events import AttestationVerified, Built, EventType, Signed, Submitted
from ccpipe.stages.sign.config import SignConfig, load_sign_config, signing_key_prefix
from ccpipe.stages.sign.cosign import Signer
from ccpipe.stages.sign.kbs import KbsRegistrar, LazyAdminRegistrar
from ccpipe.stages.sign.keys import PrivateKey, load_or_create_keys
from ccpipe.stages.sign.release import launch_reference_values
from ccpipe.stages.sign.workload import ProvenanceNotAttested, SignContext, binds_provenance, sign_workload_once

STAGE_NAME = "sign"
BUILD_RUNNER_PURPOSE = "build-runner"

EventLookup = Callable[[str, EventType], Awaitable[Event]]
"""``lookup(workload_id, type)`` → the workload's latest event of that type (raises InvalidInput if none)."""


def trail_lookup(settings: Settings, endpoints: Endpoints) -> EventLookup:
    """An :data:`EventLookup` over NATS: a connection per lookup, closed at once.

    A sign is a few lookups per workload; a short connection leaves nothing open (or
    reconnecting) when the stages stop, which a connection kept for the process would.
    """

    trust = input_trust(settings.data_dir)

    async def lookup(workload_id: str, event_type: EventType) -> Event:
        nc = await connect_as(settings, endpoints.nats_url, Component.SIGN, name="ccpipe-sign-reader")
        try:
            return await workload_event(nc.jetstream(), workload_id, event_type, trust=trust)
        except (NatsError, OSError) as exc:
            raise TransientError(
                f"reading the {event_type.value} event of {workload_id} failed: {exc!r}", code="sign.trail"
            ) from exc
        finally:
            await nc.close()

    return lookup


def sign_stages(
    settings: Settings,
    endpoints: Endpoints,
    *,
    config: SignConfig | None = None,
    registrar: KbsRegistrar | None = None,
    lookup: EventLookup | None = None,
    signer: tuple[PrivateKey | Signer, bytes] | None = None,
) -> list[StageSpec]:
    """The ``sign`` stage: input ``attestation.verified`` (build-runner), output ``signed``.

    ``registrar``, ``lookup`` and ``signer`` (key, public PEM) default to the KBS admin API at
    ``endpoints.kbs_url``, the trail at ``endpoints.nats_url`` and the pipeline's cosign key
    under ``<data_dir>/keys/sign/`` (created on first use). Raises :class:`ConfigurationError`
    for a bad ``CCPIPE_SIGN_*`` configuration.
    """
    cfg = config or load_sign_config()
    find = lookup or trail_lookup(settings, endpoints)
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
        previous = await _already_signed(find, event.workload_id, built)
        if previous is not None:
            return [_output(previous)]
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
        return [_output(await sign_workload_once(built, event.workload_id, submitted.spec.tee, ctx, reg))]

    return [
        StageSpec(
            name=STAGE_NAME,
            input_type=EventType.ATTESTATION_VERIFIED,
            output_types=(EventType.SIGNED,),
            handler=on_attestation_verified,
            description=on_attestation_verified.__doc__ or "",
        )
    ]


def _output(signed: Signed) -> Output:
    return Output(
        EventType.SIGNED, signed, subject=Subject(image_digest=signed.image_digest, key_id=signed.key_resource)
    )


async def _already_signed(find: EventLookup, workload_id: str, built: Built) -> Signed | None:
    try:
        event = await find(workload_id, EventType.SIGNED)
    except InvalidInput:
        return None  # not signed yet
    signed = event.payload
    if isinstance(signed, Signed) and signed.source_image_digest == built.image_digest:
        return signed
    return None
