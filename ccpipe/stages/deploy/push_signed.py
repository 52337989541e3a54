"""Push a signed workload image, its cosign signature and attestations: the core of the ``push`` step.

Input is what the sign stage left: an OCI layout holding the encrypted image (by digest),
its ``sha256-<hex>.sig`` signature manifest and, when present, its ``sha256-<hex>.att``
attestation manifest and OCI 1.1 referrers. Before anything is sent, the layout must hold
the image and exactly the signature the ``signed`` event names, so the registry never gets
an image whose signature is not the one the trail recorded. The push itself goes through
:func:`~ccpipe.oci.registry.push_layout` (blobs first, manifests last: an interrupted push
leaves no manifest pointing at missing blobs); afterwards the registry is asked for both
manifests, so ``pushed`` is only published for what the registry really holds.

No NATS here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ccpipe.oci.cosign_names import attestation_tag, signature_tag
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry import RegistryClient, push_layout
from ccpipe.oci.registry.errors import LayoutInvalid
from ccpipe.schemas.events import Pushed, Signed
from ccpipe.stages.deploy.errors import PushIncomplete, SignatureNotInLayout


@dataclass(frozen=True)
class PushResult:
    """What was pushed: the ``pushed`` payload and the attachments that went with it."""

    pushed: Pushed
    signature_digest: str
    attestation_digest: str | None


def check_signed_layout(signed: Signed) -> OciLayout:
    """Open the layout and check it holds the image and the signature ``signed`` names.

    Raises :class:`LayoutInvalid` (no layout, no image) or :class:`SignatureNotInLayout`.
    """
    try:
        layout = OciLayout.open(Path(signed.layout))
        entries = layout.read_index().manifests
    except OciLayoutError as exc:
        raise LayoutInvalid(f"signed layout {signed.layout}: {exc.message}") from exc
    if not any(d.digest == signed.image_digest for d in entries):
        raise LayoutInvalid(f"signed layout {signed.layout} does not hold image {signed.image_digest}")
    sig = [d for d in entries if d.ref_name == signature_tag(signed.image_digest)]
    if not sig:
        raise SignatureNotInLayout(
            f"signed layout {signed.layout} has no signature {signature_tag(signed.image_digest)}"
        )
    if sig[0].digest != signed.signature_digest:
        raise SignatureNotInLayout(
            f"signed layout {signed.layout}: signature manifest is {sig[0].digest}, "
            f"but the signed event names {signed.signature_digest}"
        )
    return layout


async def push_signed(client: RegistryClient, signed: Signed, repository: str, tag: str) -> PushResult:
    """Push the image of ``signed`` as ``repository:tag`` with its signature and attestations.

    Raises :class:`LayoutInvalid` / :class:`SignatureNotInLayout` before any request for a
    layout that does not match the event, ``RegistryError``s from the registry (transient ones
    are :class:`~ccpipe.schemas.errors.TransientError`), and :class:`PushIncomplete` if a manifest is
    not visible after the push.
    """
    layout = check_signed_layout(signed)
    has_att = any(d.ref_name == attestation_tag(signed.image_digest) for d in layout.read_index().manifests)
    digest = await push_layout(client, layout.root, repository, tag, source_ref=signed.image_digest)
    where = client.where(repository)
    if digest != signed.image_digest:
        raise LayoutInvalid(f"{where}: pushed {digest}, but the signed event names {signed.image_digest}")
    if await client.manifest_digest(repository, signed.image_digest) != signed.image_digest:
        raise PushIncomplete(f"{where}: image {signed.image_digest} is not in the registry after the push")
    sig = await client.manifest_digest(repository, signature_tag(signed.image_digest))
    if sig != signed.signature_digest:
        raise PushIncomplete(f"{where}: signature tag shows {sig}, expected {signed.signature_digest}")
    att = await client.manifest_digest(repository, attestation_tag(signed.image_digest)) if has_att else None
    return PushResult(_pushed(client, signed, repository), sig, att)


def _pushed(client: RegistryClient, signed: Signed, repository: str) -> Pushed:
    return Pushed(registry=client.registry, repository=repository, image_digest=signed.image_digest,
                  reference=f"docker://{client.registry}/{repository}@{signed.image_digest}")


async def pushed_before(client: RegistryClient, signed: Signed, repository: str) -> PushResult | None:
    """What a completed earlier push of ``signed`` left in the registry, or None if it is not all there.

    For a redelivered ``signed`` whose layout is gone: the push stage purges the layout only after
    the image and its signature are in the registry, so a push killed after that purge (before
    ``pushed`` was stored) is finished by reading the registry instead of pushing again.
    """
    if await client.manifest_digest(repository, signed.image_digest) != signed.image_digest:
        return None
    sig = await client.manifest_digest(repository, signature_tag(signed.image_digest))
    if sig != signed.signature_digest:
        return None
    att = await client.manifest_digest(repository, attestation_tag(signed.image_digest))
    return PushResult(_pushed(client, signed, repository), sig, att)
