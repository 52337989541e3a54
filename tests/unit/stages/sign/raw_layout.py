"""Dict-level access to OCI layouts for the sign tests, over ``ccpipe.oci.layout``.

Tests forge manifests, re-point tags and flip blob bytes; these helpers give them plain JSON and
paths while every write still goes through the project's one layout module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccpipe.oci.documents import DOCKER_MEDIA_TYPE_MANIFEST, MEDIA_TYPE_MANIFEST, Descriptor
from ccpipe.oci.layout import OciLayout

OCI_MANIFEST = MEDIA_TYPE_MANIFEST
DOCKER_MANIFEST = DOCKER_MEDIA_TYPE_MANIFEST


def find_descriptor(path: Path, ref: str) -> dict[str, Any]:
    """The index entry for a tag or digest, as JSON."""
    return OciLayout.open(path).resolve_image(ref).model_dump(mode="json", by_alias=True, exclude_none=True)


def find_tagged(path: Path, tag: str) -> dict[str, Any] | None:
    """The index entry tagged ``tag`` as JSON, or None."""
    desc = OciLayout.open(path).find(tag)
    return None if desc is None else desc.model_dump(mode="json", by_alias=True, exclude_none=True)


def read_blob(path: Path, digest: str, max_size: int = 1 << 30) -> bytes:
    """A blob's bytes (digest checked)."""
    return OciLayout.open(path).read_blob(digest, max_size=max_size)


def read_manifest(path: Path, tag: str) -> dict[str, Any]:
    """The JSON of the manifest tagged ``tag``."""
    doc: dict[str, Any] = json.loads(read_blob(path, find_descriptor(path, tag)["digest"]))
    return doc


def read_index(path: Path) -> dict[str, Any]:
    """``index.json`` as JSON."""
    doc: dict[str, Any] = json.loads((path / "index.json").read_bytes())
    return doc


def write_blob(path: Path, data: bytes) -> str:
    """Store raw bytes; returns the digest."""
    return OciLayout.open(path).write_blob(data, "application/octet-stream").digest


def put_manifest(path: Path, manifest: dict[str, Any], tag: str, media_type: str = OCI_MANIFEST) -> str:
    """Store ``manifest`` as given (not canonicalized) and point ``tag`` at it; returns its digest."""
    lay = OciLayout.open(path)
    desc = lay.write_blob(json.dumps(manifest).encode(), media_type)
    lay.tag(desc, tag)
    return desc.digest


def tag_descriptor(path: Path, desc: dict[str, Any], tag: str) -> None:
    """Point ``tag`` at an existing descriptor (given as JSON)."""
    OciLayout.open(path).tag(Descriptor.model_validate(desc), tag)


def blob_path(path: Path, digest: str) -> Path:
    """Where a blob lives."""
    return OciLayout(path).blob_path(digest)


def copy_blob(src: Path, dst: Path, digest: str) -> None:
    """Copy one blob between layouts."""
    size = blob_path(src, digest).stat().st_size
    OciLayout.open(dst).copy_blob_from(
        OciLayout.open(src), Descriptor(media_type="application/octet-stream", digest=digest, size=size)
    )
