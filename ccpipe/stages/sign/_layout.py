"""The sign stage's view of OCI layouts: skopeo-style references over ``ccpipe.stages.build.oci_layout``.

All layout I/O (blobs, digests, ``index.json``, tags) lives in :mod:`ccpipe.stages.build.oci_layout`,
the project's one home for it; this module only adds what signing and encryption need on top:
parsing ``[oci:]DIR[:TAG]``, resolving a tag *or* a manifest digest, refusing multi-platform
indexes, and opening a blob for streaming.

Imports nothing of the project but ``ccpipe.stages.build.oci_layout`` / ``ccpipe.stages.build.errors`` and
``ccpipe.stages.sign.errors``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from ccpipe.stages.build.errors import BlobMissing, RefNotFound
from ccpipe.stages.build.oci_layout import (
    DOCKER_MEDIA_TYPE_MANIFEST,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ImageManifest,
    OciLayout,
)
from ccpipe.stages.sign.errors import UnsupportedLayer

__all__ = [
    "DOCKER_MEDIA_TYPE_MANIFEST",
    "MEDIA_TYPE_MANIFEST",
    "Descriptor",
    "ImageManifest",
    "LayoutRef",
    "OciLayout",
    "find_tagged",
    "open_blob",
    "open_image",
    "resolve",
]


@dataclass(frozen=True)
class LayoutRef:
    """An image in an OCI layout: the directory and an optional tag (or ``sha256:`` digest)."""

    path: Path
    ref: str | None = None

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | LayoutRef) -> LayoutRef:
        """Parse skopeo's ``[oci:]DIR[:TAG]`` (split at the first colon, as skopeo does).

        A ``Path`` is taken as a directory without tag.
        """
        if isinstance(value, LayoutRef):
            return value
        if not isinstance(value, str):
            return cls(Path(value))
        text = value.removeprefix("oci:")
        path, sep, ref = text.partition(":")
        return cls(Path(path), ref if sep and ref else None)

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.ref}" if self.ref else "")


def find_tagged(layout: OciLayout, tag: str) -> Descriptor | None:
    """The index entry named ``tag``, or None."""
    try:
        return layout.resolve(tag)
    except RefNotFound:
        return None


def resolve(layout: OciLayout, ref: str | None) -> Descriptor:
    """The index entry for ``ref``: a tag, a manifest digest, or None for the only image.

    Raises ``RefNotFound`` (an ``OciLayoutError``).
    """
    if ref is not None and ref.startswith(("sha256:", "sha512:")):
        for desc in layout.read_index().manifests:
            if desc.digest == ref:
                return desc
        raise RefNotFound(f"{layout.root} has no image with manifest {ref}")
    return layout.resolve(ref)


def open_image(ref: LayoutRef) -> tuple[OciLayout, Descriptor, ImageManifest]:
    """Open the layout and read (and check) the image manifest ``ref`` names.

    Only single-platform image manifests are handled: an index raises :class:`UnsupportedLayer`.
    """
    layout = OciLayout.open(ref.path)
    desc = resolve(layout, ref.ref)
    if desc.media_type in INDEX_MEDIA_TYPES:
        raise UnsupportedLayer(f"{ref} is a multi-platform index; pick one platform's manifest first")
    return layout, desc, layout.read_manifest(desc)


def open_blob(layout: OciLayout, digest: str) -> io.BufferedReader:
    """Open a (possibly large) blob for streaming; the caller checks the digest while reading."""
    try:
        return layout.blob_path(digest).open("rb")
    except FileNotFoundError:
        raise BlobMissing(f"blob {digest} is not in {layout.root}") from None
