"""Push an image from an OCI layout: every blob first (each verified by HEAD), then manifests.

The order is the safety property: a manifest is PUT only after every blob it names, and every
child manifest of an index, is confirmed present in the repository. A push interrupted at any
point therefore leaves at worst unreferenced blobs, never a manifest pointing at missing
blobs. Besides the image, :func:`push_layout` pushes what the layout holds for it: cosign's
``sha256-<hex>.sig`` / ``.att`` tags (and a ``sha256-<hex>`` referrers index), and untagged
OCI 1.1 referrer manifests whose ``subject`` is the image (recorded in the fallback index when
the registry lacks the referrers API).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ccpipe.oci.cosign_names import is_digest_tag, names_attachment_of
from ccpipe.oci.documents import ANNOTATION_REF_NAME as REF_NAME
from ccpipe.oci.errors import BlobDigestMismatch, OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry.client import RegistryClient
from ccpipe.oci.registry.errors import DigestMismatch, LayoutInvalid
from ccpipe.oci.registry.manifests import MAX_MANIFEST, Json, descriptors, media_type_of, parse_manifest
from ccpipe.oci.registry.referrers import record_referrer

#: blobs pushed at the same time
PARALLEL_BLOBS = 4


@contextmanager
def layout_errors(layout: Path) -> Iterator[None]:
    """Turn the shared layout module's errors into this client's family (one ``deploy.*`` code set)."""
    try:
        yield
    except BlobDigestMismatch as exc:
        raise DigestMismatch(f"{layout}: {exc.message}; the blob does not hash to its name") from exc
    except OciLayoutError as exc:
        raise LayoutInvalid(f"{layout}: {exc.message}") from exc


def _open(layout: Path) -> OciLayout:
    with layout_errors(layout):
        return OciLayout.open(layout)


def _read_manifest_blob(lay: OciLayout, digest: str) -> bytes:
    with layout_errors(lay.root):
        return lay.read_blob(digest, max_size=MAX_MANIFEST)


def _index_entries(lay: OciLayout) -> list[Json]:
    with layout_errors(lay.root):
        index = lay.read_index()
    return [d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in index.manifests]


async def push_tree(
    client: RegistryClient,
    layout: Path,
    repository: str,
    descriptor: Json,
    reference: str,
    *,
    mount_from: tuple[str, ...] = (),
) -> str:
    """Push the manifest or index ``descriptor`` of ``layout`` and everything below it.

    Children and blobs first, the manifest itself last, under ``reference`` (a tag or its
    digest). Returns the manifest digest. Raises :class:`LayoutInvalid` / ``DigestMismatch``
    for a broken layout and ``RegistryError``s from the registry.
    """
    digest = descriptor.get("digest")
    if not isinstance(digest, str):
        raise LayoutInvalid(f"{layout}: a descriptor in index.json has no digest")
    lay = _open(layout)
    body = _read_manifest_blob(lay, digest)
    where = f"{layout} manifest {digest}"
    doc = parse_manifest(body, where)
    blobs, children = descriptors(doc, where)
    for child in children:
        await push_tree(client, layout, repository, child, child["digest"], mount_from=mount_from)
    gate = asyncio.Semaphore(PARALLEL_BLOBS)

    async def one(blob: Json) -> None:
        with layout_errors(layout):
            path = lay.blob_path(blob["digest"])
        if not path.is_file():
            raise LayoutInvalid(f"{layout}: blob {blob['digest']} named by {digest} is missing")
        async with gate:
            await client.push_blob(repository, blob["digest"], blob["size"], path, mount_from=mount_from)

    # a TaskGroup cancels the other uploads when one fails, and the manifest is never reached
    try:
        async with asyncio.TaskGroup() as group:
            for blob in {b["digest"]: b for b in blobs}.values():
                group.create_task(one(blob))
    except ExceptionGroup as group_error:
        # callers match on our error classes, not on groups: raise the first failure itself
        raise group_error.exceptions[0] from None
    return await client.push_manifest(repository, reference, body, media_type_of(doc, descriptor.get("mediaType")))


def _find_root(entries: list[Json], ref: str, layout: Path) -> Json:
    if ref.startswith("sha256:"):
        # by digest: the layout entry of that manifest, tagged or not
        by_digest = [m for m in entries if m.get("digest") == ref]
        if by_digest:
            return by_digest[0]
    named = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == ref]
    if named:
        return named[-1]
    images = [m for m in entries if not is_digest_tag((m.get("annotations") or {}).get(REF_NAME, ""))]
    untagged = [m for m in images if REF_NAME not in (m.get("annotations") or {})]
    if len(images) == 1 and untagged:
        return untagged[0]
    names = sorted({(m.get("annotations") or {}).get(REF_NAME, "") for m in entries} - {""})
    raise LayoutInvalid(f"{layout} holds no image named {ref!r} (names: {', '.join(names) or 'none'})")


async def push_layout(
    client: RegistryClient,
    layout_dir: Path,
    repository: str,
    tag: str,
    *,
    source_ref: str | None = None,
    mount_from: tuple[str, ...] = (),
    attachments: bool = True,
) -> str:
    """Push the image named ``source_ref`` (default: ``tag``) in ``layout_dir`` as ``repository:tag``.

    ``source_ref`` may also be the image's manifest digest (an entry of ``index.json``).
    Also pushes its signature and attestations found in the layout (see the module docstring)
    unless ``attachments`` is False. A layout with a single untagged image is pushed whatever
    the name. Returns the pushed manifest digest. Raises :class:`LayoutInvalid`,
    ``DigestMismatch`` and ``RegistryError``s; on any error no manifest was pushed whose blobs
    are not all in the registry.
    """
    lay = _open(layout_dir)
    root = _find_root(_index_entries(lay), source_ref or tag, layout_dir)
    digest = await push_tree(client, layout_dir, repository, root, tag, mount_from=mount_from)
    if attachments:
        await push_attachments(client, layout_dir, repository, digest, mount_from=mount_from)
    return digest


async def push_attachments(
    client: RegistryClient, layout_dir: Path, repository: str, digest: str, *, mount_from: tuple[str, ...] = ()
) -> None:
    """Push what ``layout_dir`` holds about image ``digest``, not the image itself.

    cosign's ``sha256-<hex>.sig`` / ``.att`` tags (and a ``sha256-<hex>`` referrers index)
    under their names, and the untagged OCI 1.1 referrers whose ``subject`` is the image, each
    recorded in the fallback index when the registry lacks the referrers API. Raises what
    :func:`push_tree` raises.
    """
    lay = _open(layout_dir)
    for entry in _index_entries(lay):
        name = (entry.get("annotations") or {}).get(REF_NAME)
        if isinstance(name, str) and names_attachment_of(name, digest):
            await push_tree(client, layout_dir, repository, entry, name, mount_from=mount_from)
        elif name is None and entry.get("digest") != digest:
            body = _read_manifest_blob(lay, entry["digest"])
            subject = parse_manifest(body, f"{layout_dir} {entry['digest']}").get("subject")
            if isinstance(subject, dict) and subject.get("digest") == digest:
                pushed = await push_tree(client, layout_dir, repository, entry, entry["digest"], mount_from=mount_from)
                await record_referrer(client, repository, body, pushed)
