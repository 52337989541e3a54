"""Loading a base: from a top digest to the platform's image, its layers copied into the output layout and checked.

Indexes are followed down to the manifest of the wanted platform; every layer is copied into
the output layout with its digest checked, then read once more (decompressed) to check its
``diff_id`` against the config and to index the base's file system, unless a
:class:`~ccpipe.stages.build.base.fs_index.BaseIndexCache` already holds that manifest's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccpipe.oci.documents import (
    DOCKER_MEDIA_TYPE_LAYER_GZIP,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_document,
)
from ccpipe.oci.errors import BlobDigestMismatch
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.json_input import load_json
from ccpipe.stages.build.base.blob_sources import BlobSource
from ccpipe.stages.build.base.fs_index import BaseFilesystem, BaseIndexCache, index_layer
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseImageError, BaseNotFound, BaseUnsupported

_LAYER_MEDIA_TYPES = {
    MEDIA_TYPE_LAYER_GZIP: MEDIA_TYPE_LAYER_GZIP,
    DOCKER_MEDIA_TYPE_LAYER_GZIP: MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER: MEDIA_TYPE_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar": MEDIA_TYPE_LAYER,
}
"""The layer media types a base may use, and the OCI type each is stored under."""


def pick_manifest(source: BlobSource, digest: str, platform: Platform, what: str) -> tuple[str, ImageManifest]:
    """Follow indexes down to the platform's image manifest; returns its digest and content."""
    for _ in range(4):
        raw = source.read(digest, manifest=True)
        try:
            doc = load_json(raw)
        except ValueError as exc:
            raise BaseImageError(f"{what}: {digest} is not JSON") from exc
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        by_type = isinstance(media_type, str) and media_type in INDEX_MEDIA_TYPES  # a list is not hashable
        if isinstance(doc, dict) and (by_type or (media_type is None and "manifests" in doc)):
            index = parse_document(ImageIndex, raw, f"{what} index {digest}")
            candidates = [
                d
                for d in index.manifests
                if d.platform is not None
                and d.platform.os == platform.os
                and d.platform.architecture == platform.architecture
                and (platform.variant is None or d.platform.variant == platform.variant)
            ]
            if not candidates:
                have = (
                    ", ".join(f"{d.platform.os}/{d.platform.architecture}" for d in index.manifests if d.platform)
                    or "no platforms"
                )
                raise BaseNotFound(f"{what} has no {platform.os}/{platform.architecture} image (it has {have})")
            digest = candidates[0].digest
            continue
        if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
            raise BaseUnsupported(f"{what} is a Docker schema 1 manifest, which is not supported")
        return digest, parse_document(ImageManifest, raw, f"{what} manifest {digest}")
    raise BaseImageError(f"{what}: indexes nested too deep")


@dataclass(frozen=True)
class LoadedBase:
    """A platform image whose layers are in the output layout, checked against its manifest and config."""

    digest: str
    """Digest of the platform's image manifest."""
    manifest: ImageManifest
    config_raw: bytes
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    """The manifest's layers with their media types made OCI."""
    diff_ids: tuple[str, ...]
    fs: BaseFilesystem


def load_base(
    source: BlobSource,
    top_digest: str,
    layout: OciLayout,
    platform: Platform,
    what: str,
    *,
    index_cache: BaseIndexCache | None = None,
) -> LoadedBase:
    """Copy the platform image's layers into ``layout``, checking digests and diff_ids.

    ``what`` names the base in errors. With ``index_cache``, a manifest whose layers were
    already checked and indexed is not decompressed again (its layers are still copied and
    their digests checked).
    """
    digest, manifest = pick_manifest(source, top_digest, platform, what)
    config_raw = source.read(manifest.config.digest, manifest=False)
    try:
        config = load_json(config_raw)
        diff_ids = tuple(config["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: config {manifest.config.digest} has no rootfs.diff_ids") from exc
    if len(diff_ids) != len(manifest.layers):
        raise BaseImageError(
            f"{what}: {len(manifest.layers)} layers but {len(diff_ids)} diff_ids in the config",
            code="build.base.inconsistent",
        )
    layers = []
    for layer in manifest.layers:
        media_type = _LAYER_MEDIA_TYPES.get(layer.media_type)
        if media_type is None:
            raise BaseUnsupported(
                f"{what}: layer {layer.digest} has media type {layer.media_type}; "
                "only gzip and uncompressed tar layers are supported"
            )
        desc = Descriptor(media_type=media_type, digest=layer.digest, size=layer.size)
        try:
            layout.add_blob(source.chunks(layer), desc)
        except BlobDigestMismatch as exc:
            raise BaseDigestMismatch(f"{what}: {exc.message}") from exc
        layers.append(desc)
    fs = index_cache.get(digest) if index_cache is not None else None
    if fs is None:
        fs = BaseFilesystem()
        for desc, diff_id in zip(layers, diff_ids, strict=True):
            got = index_layer(layout, desc, fs)
            if got != diff_id:
                raise BaseDigestMismatch(f"{what}: layer {desc.digest} unpacks to {got}, the config says {diff_id}")
        if index_cache is not None:
            index_cache.put(digest, fs)
    return LoadedBase(digest, manifest, config_raw, config, tuple(layers), diff_ids, fs)
