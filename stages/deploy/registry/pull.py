"""Pull an image from a registry into an OCI layout, verifying every byte.

Each manifest is fetched by digest below the root (so its bytes must hash to the digest its
parent names) and each blob is streamed to a temporary file and renamed into place only if
it hashes to its digest. A manifest is written into the layout after its blobs, and the
``index.json`` entry last, so an interrupted pull leaves no name pointing at missing content.
"""

from __future__ import annotations

from pathlib import Path

from stages.deploy.errors import ManifestNotFound
from stages.deploy.registry.client import Manifest, RegistryClient
from stages.deploy.registry.digests import descriptors, fallback_tag, is_digest, media_type_of, parse_manifest
from stages.deploy.registry.layout import blob_path, has_blob, init_layout, set_ref, write_blob

#: cosign's attachment tags pulled along with an image
ATTACHMENT_SUFFIXES = (".sig", ".att")


async def _pull_tree(client: RegistryClient, repository: str, manifest: Manifest, layout: Path) -> str:
    where = client.where(repository, f"manifest {manifest.digest}")
    doc = parse_manifest(manifest.body, where)
    blobs, children = descriptors(doc, where)
    for child in children:
        await _pull_tree(client, repository, await client.get_manifest(repository, child["digest"]), layout)
    for blob in blobs:
        if not has_blob(layout, blob["digest"], blob["size"]):
            dest = blob_path(layout, blob["digest"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            await client.download_blob(repository, blob["digest"], dest, size=blob["size"])
    write_blob(layout, manifest.body)
    return media_type_of(doc, manifest.media_type or None)


async def pull_to_layout(
    client: RegistryClient,
    repository: str,
    reference: str,
    layout_dir: Path,
    *,
    ref_name: str | None = None,
    attachments: bool = True,
) -> str:
    """Pull ``repository:reference`` (tag or digest) into ``layout_dir``; returns the manifest digest.

    The image is named ``ref_name`` in ``index.json`` (default: the tag; untagged when pulled
    by digest without a name). With ``attachments``, cosign's ``sha256-<hex>.sig``/``.att``
    tags are pulled too when the registry has them. Raises :class:`ManifestNotFound`,
    :class:`DigestMismatch` (tampered content; nothing of it is kept) and ``RegistryError``s.
    """
    init_layout(layout_dir)
    root = await client.get_manifest(repository, reference)
    media_type = await _pull_tree(client, repository, root, layout_dir)
    name = ref_name if ref_name is not None else (None if is_digest(reference) else reference)
    set_ref(layout_dir, {"mediaType": media_type, "digest": root.digest, "size": len(root.body)}, name)
    if attachments:
        for suffix in ATTACHMENT_SUFFIXES:
            tag = fallback_tag(root.digest) + suffix
            try:
                extra = await client.get_manifest(repository, tag)
            except ManifestNotFound:
                continue
            mt = await _pull_tree(client, repository, extra, layout_dir)
            set_ref(layout_dir, {"mediaType": mt, "digest": extra.digest, "size": len(extra.body)}, tag)
    return root.digest
