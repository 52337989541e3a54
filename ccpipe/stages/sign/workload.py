"""The sign stage's core for one workload: ``built`` in, ``signed`` out (no NATS).

:func:`sign_workload` does, in this order:

1. encrypt the built image into ``<data_dir>/images/<workload>/signed`` for the KBS, with a
   fresh key (``kbs:///ccpipe/<workload>/image-key``) from the OS CSPRNG;
2. sign the encrypted manifest (cosign simple-signing, ``sha256-<hex>.sig``) and attach the
   build's SLSA provenance as a DSSE cosign attestation (``sha256-<hex>.att``), both for the
   identity ``<registry>/ccpipe/<name>`` the deploy stage pushes to;
3. register in the KBS the workload's ``[tee]`` requirements (``ccpipe/<workload>/tee-requirements``:
   the KBS releases the workload's keys only to a verified TEE that meets them), the image key
   (from memory: it is in no file and no event), the cosign public key a guest checks
   signatures with (``ccpipe/<workload>/cosign-pubkey``), and the reference values (image
   digest, initdata digest, launch measurements), scoped to the workload.

The initdata document itself (not secret) is carried in ``signed.initdata`` and written to
``<data_dir>/images/<workload>/initdata.toml``.

Only then does the caller publish ``signed``. A failed attempt leaves nothing that a later
attempt trusts: the output layout is written afresh and the KBS resources are overwritten.
The stage runs it at most once per workload (:mod:`ccpipe.stages.sign.once`), and then
:func:`remove_plaintext` deletes the build stage's plaintext image
(``<data_dir>/images/<workload>/plain``, 0700 while it exists).

Before signing, :func:`binds_provenance` checks that the verified attestation is the build
runner's evidence for this very build, and :func:`check_image_is_provenance_subject` that the
image to sign is the one that provenance names (its digest is the statement's subject, the
provenance digest is the statement's, and the layout holds exactly that manifest).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpipe.oci.cosign_names import repository_for
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.events import Built, Signed
from ccpipe.schemas.kbs import TEE_REQUIREMENTS_TYPE
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.build.config import workload_image_dir
from ccpipe.stages.sign.config import COSIGN_PUBKEY_TYPE, IMAGE_KEY_TYPE, KBS_REPOSITORY, resource_path
from ccpipe.stages.sign.cosign import Signer, attest_image, sign_image
from ccpipe.stages.sign.encrypt import encrypt_image_for_kbs
from ccpipe.stages.sign.errors import SignStageError
from ccpipe.stages.sign.kbs import KbsRegistrar
from ccpipe.stages.sign.keys import PrivateKey
from ccpipe.stages.sign.recipients import ImageKey, kbs_resource_uri
from ccpipe.stages.sign.release import ReferenceValue, reference_values, rvps_message, workload_initdata

_log = logging.getLogger(__name__)


class ProvenanceNotAttested(SignStageError):
    """The verified attestation does not bind the provenance of the build it names."""

    code = "sign.provenance.unbound"
    default_hint = "the build runner's evidence must carry SHA-384(provenance) as report_data; rebuild"


class ImageNotProvenanceSubject(SignStageError):
    """The image to sign is not the subject of the provenance the attestation bound."""

    code = "sign.provenance.subject"
    default_hint = "the built event's image must be the provenance statement's subject; rebuild"


def check_image_is_provenance_subject(built: Built) -> None:
    """Refuse to sign an image other than the one the attested provenance names.

    The provenance digest must be SHA-384 of the statement (what the runner's report_data binds,
    :func:`binds_provenance`), the image digest one of the statement's subject digests, and the
    layout's blob of that digest must hash to it. Raises :class:`ProvenanceNotAttested`,
    :class:`ImageNotProvenanceSubject` or ``OciLayoutError``.
    """
    statement = "sha384:" + hashlib.sha384(canonical_json(built.provenance)).hexdigest()
    if built.provenance_digest != statement:
        raise ProvenanceNotAttested(f"provenance_digest {built.provenance_digest} is not the statement's ({statement})")
    subjects = built.provenance.get("subject") or []
    named = {f"{alg}:{value}" for s in subjects if isinstance(s, dict)
             for alg, value in dict(s.get("digest") or {}).items()}
    if built.image_digest not in named:
        raise ImageNotProvenanceSubject(
            f"image {built.image_digest} is not a subject of its provenance ({', '.join(sorted(named)) or 'none'})"
        )
    OciLayout.open(built.layout).verify_blob(built.image_digest)


@dataclass(frozen=True)
class SignContext:
    """What signing one workload needs besides its ``built`` payload."""

    data_dir: Path
    kbs_url: str
    """The KBS URL a guest talks to (goes into the initdata)."""
    signer: PrivateKey | Signer
    public_key_pem: bytes
    """Registered as the key guests verify signatures with."""
    registry: str | None = None
    """Registry host[:port] the image is pushed to (part of the signed identity)."""
    launch_values: Mapping[str, list[ReferenceValue]] | None = None
    """Launch measurements to register (``release.launch_reference_values``), if known."""
    signature_requirement: Mapping[str, Any] | None = None
    """The guest's signature requirement when not the registered key (keyless signing)."""


def workload_name(built: Built, workload_id: str) -> str:
    """The image's name as the provenance's subject gives it (the workload name)."""
    subjects = built.provenance.get("subject") or []
    name = subjects[0].get("name") if subjects and isinstance(subjects[0], dict) else None
    return str(name) if name else workload_id


def identity_for(registry: str | None, name: str) -> str:
    """The docker-reference signed for: ``<registry>/ccpipe/<name>`` (no registry: ``ccpipe/<name>``)."""
    repo = repository_for(name)
    return f"{registry}/{repo}" if registry else repo


def binds_provenance(built: Built, claims: Mapping[str, Any], evidence_digest: str | None = None) -> bool:
    """Whether a verified attestation is about this build's runner evidence.

    True when the claims' ``report_data`` is the provenance digest (zero-padded to 64 bytes), or
    when ``evidence_digest`` is the SHA-256 of the built event's runner evidence.
    """
    expected = bytes.fromhex(built.provenance_digest.partition(":")[2]).ljust(64, b"\0").hex()
    if str(claims.get("report_data", "")).lower() == expected:
        return True
    if evidence_digest:
        raw = base64.b64decode(built.runner_evidence.evidence)
        return evidence_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    return False


def initdata_path(data_dir: Path, workload_id: str) -> Path:
    """``<data_dir>/images/<workload>/initdata.toml``: the initdata whose digest ``signed`` carries."""
    return workload_image_dir(data_dir, workload_id, "initdata.toml")


@dataclass(frozen=True)
class _Prepared:
    signed_dir: Path
    image_digest: str
    signature_digest: str
    key: ImageKey


def _encrypt_and_sign(built: Built, workload_id: str, ctx: SignContext) -> _Prepared:
    name = workload_name(built, workload_id)
    signed_dir = workload_image_dir(ctx.data_dir, workload_id, "signed")
    if signed_dir.exists():
        shutil.rmtree(signed_dir)  # what an earlier, unpublished attempt left
    kid = kbs_resource_uri(KBS_REPOSITORY, workload_id, IMAGE_KEY_TYPE)
    enc, key = encrypt_image_for_kbs(f"oci:{built.layout}:{built.image_digest}", f"oci:{signed_dir}:{name}", kid)
    identity = identity_for(ctx.registry, name)
    sig = sign_image(signed_dir, name, ctx.signer, identity=identity)
    attest_image(
        signed_dir,
        name,
        ctx.signer,
        predicate_type=str(built.provenance.get("predicateType", "https://slsa.dev/provenance/v1")),
        predicate=built.provenance.get("predicate", {}),
        identity=identity,
    )
    return _Prepared(signed_dir, enc.manifest_digest, sig.manifest_digest, key)


async def sign_workload(
    built: Built, workload_id: str, tee: TeeRequirements, ctx: SignContext, registrar: KbsRegistrar
) -> Signed:
    """Encrypt, sign, attest and register one built image (its key to go only to a TEE that meets
    ``tee``, the workload's ``[tee]`` requirements); returns the ``signed`` payload.

    Raises ``EncryptionError`` / ``SigningError`` / ``OciLayoutError`` leaves (final),
    :class:`~ccpipe.stages.sign.kbs.KbsUnreachable` (transient) and what the KBS refuses with.
    """
    prepared = await asyncio.to_thread(_encrypt_and_sign, built, workload_id, ctx)
    name = workload_name(built, workload_id)
    pubkey_uri = kbs_resource_uri(KBS_REPOSITORY, workload_id, COSIGN_PUBKEY_TYPE)
    initdata, initdata_hex = workload_initdata(
        ctx.kbs_url, prepared.image_digest, identity_for(ctx.registry, name), pubkey_uri, ctx.signature_requirement
    )
    # not secret: the host hands it to the TEE at launch, and its digest is a reference value
    initdata_path(ctx.data_dir, workload_id).write_text(initdata)
    # the requirements before the key: no moment where the key is there and they are not
    await registrar.set_resource(resource_path(workload_id, TEE_REQUIREMENTS_TYPE), tee.model_dump_json().encode())
    await registrar.set_resource(resource_path(workload_id, IMAGE_KEY_TYPE), prepared.key.kek)
    await registrar.set_resource(resource_path(workload_id, COSIGN_PUBKEY_TYPE), ctx.public_key_pem)
    values = reference_values(prepared.image_digest, initdata_hex, ctx.launch_values)
    await registrar.set_reference_values(rvps_message(workload_id, values))
    return Signed(
        image_digest=prepared.image_digest,
        source_image_digest=built.image_digest,
        layout=str(prepared.signed_dir),
        key_resource=kbs_resource_uri(KBS_REPOSITORY, workload_id, IMAGE_KEY_TYPE),
        signature_digest=prepared.signature_digest,
        initdata_digest=initdata_hex,
        initdata=initdata,
    )


def remove_plaintext(built: Built, workload_id: str, data_dir: Path) -> None:
    """Delete the build stage's plaintext image of ``workload_id`` once its encrypted one is signed.

    Only the build stage's own output directory (``<data dir>/images/<workload>/plain``): a
    layout path named by an event is not the sign stage's to delete.
    """
    plain = workload_image_dir(data_dir, workload_id, "plain")
    if Path(built.layout).resolve() != plain.resolve() or not plain.exists():
        return
    try:
        shutil.rmtree(plain)
    except OSError as exc:  # the image is signed and its event due: say so, and let a redelivery retry
        _log.warning("could not remove the plaintext image %s: %s", plain, exc)
