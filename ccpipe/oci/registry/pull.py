"""Pull an image from a registry into an OCI layout, verifying every byte.

Each manifest is fetched by digest below the root (so its bytes must hash to the digest its
parent names) and each blob is streamed to a temporary file and renamed into place only if
it hashes to its digest. A manifest is written into the layout after its blobs, and the
``index.json`` entry last, so an interrupted pull leaves no name pointing at missing content.
"""

from __future__ import annotations

from pathlib import Path

from ccpipe.oci.cosign_names import ATTACHMENT_SUFFIXES, referrers_tag
from ccpipe.oci.documents import Descriptor
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry.client import Manifest, RegistryClient
from ccpipe.oci.registry.errors import ManifestNotFound
from ccpipe.oci.registry.manifests import ALGORITHMS, descriptors, media_type_of, parse_manifest
from ccpipe.oci.registry.push import layout_errors
from ccpipe.oci.registry.referrers import list_referrers
from ccpipe.schemas.digest import is_digest


def _has_verified(layout: OciLayout, digest: str, size: int) -> bool:
    """True if the layout already holds ``digest`` with that size and content (a corrupt copy is fetched again)."""
    if not layout.has_blob(digest):
        return False
    try:
        layout.verify_blob(digest, size)
    except OciLayoutError:
        return False
    return True


def _name(layout: OciLayout, descriptor: Descriptor, name: str | None) -> None:
    """Point ``name`` at ``descriptor`` in index.json; untagged, add the entry once."""
    with layout_errors(layout.root):
        if name is not None:
            layout.tag(descriptor, name)
        else:
            layout.add_untagged(descriptor)


async def _pull_tree(
    client: RegistryClient, repository: str, manifest: Manifest, layout: OciLayout, *, blobs_too: bool = True
) -> str:
    where = client.where(repository, f"manifest {manifest.digest}")
    doc = parse_manifest(manifest.body, where)
    blobs, children = descriptors(doc, where)
    for child in children:
        child_manifest = await client.get_manifest(repository, child["digest"])
        await _pull_tree(client, repository, child_manifest, layout, blobs_too=blobs_too)
    for blob in blobs if blobs_too else []:
        if not _has_verified(layout, blob["digest"], blob["size"]):
            with layout_errors(layout.root):
                dest = layout.blob_path(blob["digest"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            # download_blob streams to a temporary file and renames it only once the digest matched
            await client.download_blob(repository, blob["digest"], dest, size=blob["size"])
    media_type = media_type_of(doc, manifest.media_type or None)
    with layout_errors(layout.root):
        layout.write_blob(manifest.body, media_type)
    return media_type


async def pull_to_layout(
    client: RegistryClient,
    repository: str,
    reference: str,
    layout_dir: Path,
    *,
    ref_name: str | None = None,
    attachments: bool = True,
    referrers: bool = False,
    image_blobs: bool = True,
) -> str:
    """Pull ``repository:reference`` (tag or digest) into ``layout_dir``; returns the manifest digest.

    The image is named ``ref_name`` in ``index.json`` (default: the tag; untagged when pulled
    by digest without a name). With ``attachments``, cosign's ``sha256-<hex>.sig``/``.att``
    tags are pulled too when the registry has them; with ``referrers``, every OCI 1.1 referrer
    of the image (cosign 3's bundles among them), untagged. Without ``image_blobs`` only the
    image's manifests are fetched, not its config and layers: enough to sign or verify it.
    Raises :class:`ManifestNotFound`, :class:`DigestMismatch` (tampered content; nothing of it
    is kept) and ``RegistryError``s.
    """
    with layout_errors(layout_dir):
        layout = OciLayout.open_or_create(layout_dir)
    root = await client.get_manifest(repository, reference)
    media_type = await _pull_tree(client, repository, root, layout, blobs_too=image_blobs)
    name = ref_name if ref_name is not None else (None if is_digest(reference, ALGORITHMS) else reference)
    _name(layout, Descriptor(media_type=media_type, digest=root.digest, size=len(root.body)), name)
    if attachments:
        for suffix in ATTACHMENT_SUFFIXES:
            tag = referrers_tag(root.digest) + suffix
            try:
                extra = await client.get_manifest(repository, tag)
            except ManifestNotFound:
                continue
            mt = await _pull_tree(client, repository, extra, layout)
            _name(layout, Descriptor(media_type=mt, digest=extra.digest, size=len(extra.body)), tag)
    if referrers:
        for entry in await list_referrers(client, repository, root.digest):
            referrer = await client.get_manifest(repository, entry["digest"])
            mt = await _pull_tree(client, repository, referrer, layout)
            _name(layout, Descriptor(media_type=mt, digest=referrer.digest, size=len(referrer.body)), None)
    return root.digest
