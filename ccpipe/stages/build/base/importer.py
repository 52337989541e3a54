"""Importing a base: an OCI layout, an ``oci-archive`` or a ``docker-archive`` made a tagged base in a layout."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ccpipe.oci.documents import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_document,
)
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.json_input import load_json
from ccpipe.stages.build.base.blob_sources import ArchiveSource, BlobSource, LayoutSource
from ccpipe.stages.build.base.fs_index import BaseFilesystem, index_layer
from ccpipe.stages.build.base.load import load_base
from ccpipe.stages.build.errors import BaseDigestMismatch, BaseImageError, BaseNotFound, BaseUnsupported
from ccpipe.stages.build.image_defaults import host_platform
from ccpipe.stages.build.layer import DEFAULT_COMPRESSION, Compression, gzip_tar_stream


def import_base(
    source: Path,
    layout_dir: Path,
    *,
    tag: str,
    source_tag: str | None = None,
    platform: Platform | None = None,
    compression: Compression = DEFAULT_COMPRESSION,
) -> Descriptor:
    """Import an image into the layout at ``layout_dir`` under ``tag``, for use as ``oci:`` base.

    ``source`` is an OCI layout directory, an ``oci-archive`` tarball (a tar of a layout, as
    ``skopeo copy … oci-archive:F``) or a ``docker-archive`` tarball (``docker save``,
    ``skopeo copy … docker-archive:F``). ``source_tag`` picks one image of several. Every blob
    is checked against its digest and every layer against its diff_id. Returns the tagged
    manifest descriptor.
    """
    source = Path(source)
    plat = platform or host_platform()
    layout = OciLayout.open_or_create(layout_dir)
    if source.is_dir():
        try:
            src = OciLayout.open(source)
            top = src.resolve(source_tag)
        except OciLayoutError as exc:
            raise BaseNotFound(f"{source}: {exc.message}") from exc
        return _import_from(LayoutSource(src), top.digest, layout, plat, tag, str(source))
    try:
        tar = tarfile.open(source, mode="r:")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError, ValueError) as exc:  # ValueError: tarfile on a malformed PAX/sparse number
        raise BaseNotFound(f"{source} is neither an OCI layout nor a readable tar archive: {exc}") from exc
    with tar:
        try:
            arch = ArchiveSource(tar, source)  # reads every header
        except (tarfile.TarError, ValueError) as exc:
            raise BaseImageError(f"{source} is not a readable tar archive: {exc}") from exc
        if "oci-layout" in arch.members and "index.json" in arch.members:
            index = parse_document(ImageIndex, arch.open("index.json").read(), f"{source} index.json")
            top = _pick_ref(index, source_tag, str(source))
            return _import_from(arch, top.digest, layout, plat, tag, str(source))
        if "manifest.json" in arch.members:
            return _import_docker_archive(arch, layout, tag, source_tag, compression)
    raise BaseUnsupported(f"{source} is not an oci-archive or docker-archive (no index.json or manifest.json)")


def _pick_ref(index: ImageIndex, name: str | None, what: str) -> Descriptor:
    if name is None:
        if len(index.manifests) == 1:
            return index.manifests[0]
        raise BaseNotFound(f"{what} holds {len(index.manifests)} images: name one")
    for d in index.manifests:
        if d.ref_name == name:
            return d
    raise BaseNotFound(f"{what} has no image called {name!r}")


def _import_from(
    source: BlobSource, top_digest: str, layout: OciLayout, platform: Platform, tag: str, what: str
) -> Descriptor:
    got = load_base(source, top_digest, layout, platform, what)
    m = got.manifest
    config_desc = Descriptor(media_type=MEDIA_TYPE_CONFIG, digest=m.config.digest, size=m.config.size)
    layout.add_blob([got.config_raw], config_desc)
    already_oci = (
        m.media_type in (None, MEDIA_TYPE_MANIFEST)
        and m.config.media_type == MEDIA_TYPE_CONFIG
        and [d.media_type for d in m.layers] == [d.media_type for d in got.layers]
    )
    if already_oci:  # keep the manifest's own bytes, so its digest survives the import
        raw = source.read(got.digest, manifest=True)
        desc = layout.add_blob([raw], Descriptor(media_type=MEDIA_TYPE_MANIFEST, digest=got.digest, size=len(raw)))
    else:  # Docker schema 2: an OCI manifest over the same blobs
        oci = ImageManifest(config=config_desc, layers=list(got.layers), annotations=m.annotations)
        desc = layout.write_document(oci, MEDIA_TYPE_MANIFEST)
    return layout.tag(desc, tag)


def _import_docker_archive(
    arch: ArchiveSource, layout: OciLayout, tag: str, source_tag: str | None, compression: Compression
) -> Descriptor:
    what = str(arch.path)
    try:
        entries = load_json(arch.open("manifest.json").read())
        if source_tag is None:
            if len(entries) != 1:
                raise BaseNotFound(f"{what} holds {len(entries)} images: name one")
            entry = entries[0]
        else:
            entry = next(e for e in entries if source_tag in (e.get("RepoTags") or []))
        config_name, layer_names = entry["Config"], entry["Layers"]
    except StopIteration:
        raise BaseNotFound(f"{what} has no image tagged {source_tag!r}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: manifest.json is not a docker-archive manifest") from exc
    config_raw = arch.open(config_name).read()
    try:
        config = load_json(config_raw)
        diff_ids = list(config["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseImageError(f"{what}: {config_name} has no rootfs.diff_ids") from exc
    if len(diff_ids) != len(layer_names):
        raise BaseImageError(f"{what}: {len(layer_names)} layers but {len(diff_ids)} diff_ids")
    layers = []
    fs = BaseFilesystem()
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        f = arch.open(name)
        head = f.read(2)
        chunks = _prepend(head, f)
        if head == b"\x1f\x8b":
            with layout.blob_writer(MEDIA_TYPE_LAYER_GZIP) as w:
                for c in chunks:
                    w.write(c)
                layer_desc = w.commit()
            got = index_layer(layout, layer_desc, fs)
        else:
            result = gzip_tar_stream(layout, chunks, compression=compression)
            layer_desc, got = result.descriptor, result.diff_id
        if got != diff_id:
            raise BaseDigestMismatch(f"{what}: layer {name} unpacks to {got}, the config says {diff_id}")
        layers.append(layer_desc)
    config_desc = layout.write_blob(config_raw, MEDIA_TYPE_CONFIG)
    manifest = ImageManifest(config=config_desc, layers=layers)
    return layout.tag(layout.write_document(manifest, MEDIA_TYPE_MANIFEST), tag)


def _prepend(head: bytes, f: IO[bytes]) -> Iterator[bytes]:
    yield head
    while chunk := f.read(1 << 20):
        yield chunk
