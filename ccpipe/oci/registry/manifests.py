"""Media types, reference names and manifest parsing shared by the registry client modules.

Manifests travel here as JSON objects (``dict``), exactly as the registry sent them, because
their bytes are what their digests name. Imports nothing of the project but ``ccpipe.schemas``,
``ccpipe.oci.documents`` and ``ccpipe.oci.registry.errors``.
"""

from __future__ import annotations

import re
from typing import Any

from ccpipe.oci.documents import (
    DOCKER_MEDIA_TYPE_MANIFEST,
    DOCKER_MEDIA_TYPE_MANIFEST_LIST,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
)
from ccpipe.oci.registry.errors import ManifestInvalid
from ccpipe.schemas.digest import SHA256_ONLY, is_digest
from ccpipe.schemas.json_input import load_json

#: what a pull accepts, most preferred first
ACCEPT = ", ".join([MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, DOCKER_MEDIA_TYPE_MANIFEST_LIST, DOCKER_MEDIA_TYPE_MANIFEST])
#: a manifest larger than this is refused instead of read (the OCI spec suggests 4 MiB)
MAX_MANIFEST = 4 * 1024 * 1024
#: the only digest algorithm the client writes and verifies (every registry supports it)
ALGORITHMS = SHA256_ONLY

_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")

Json = dict[str, Any]


def check_repository(value: str) -> str:
    """Return ``value`` if it is a valid repository name; raise :class:`ValueError` otherwise."""
    if not _REPO.match(value) or len(value) > 255:
        raise ValueError(f"not a valid repository name: {value!r}")
    return value


def check_reference(value: str) -> str:
    """Return ``value`` if it is a tag or a sha256 digest; raise :class:`ValueError` otherwise."""
    if not (is_digest(value, ALGORITHMS) or _TAG.match(value)):
        raise ValueError(f"not a tag or digest: {value!r}")
    return value


def parse_manifest(body: bytes, where: str) -> Json:
    """Parse manifest/index JSON; raises :class:`ManifestInvalid` naming ``where``."""
    try:
        doc = load_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"{where}: manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid(f"{where}: manifest is not a JSON object")
    return doc


def media_type_of(doc: Json, fallback: str | None = None) -> str:
    """The manifest's media type: its ``mediaType`` field, else ``fallback``, else by shape."""
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if fallback:
        return fallback
    return MEDIA_TYPE_INDEX if "manifests" in doc else MEDIA_TYPE_MANIFEST


def descriptors(doc: Json, where: str) -> tuple[list[Json], list[Json]]:
    """``(blobs, child manifests)`` a manifest or index refers to; raises :class:`ManifestInvalid`."""
    blobs: list[Json] = []
    children: list[Json] = []
    if "manifests" in doc:
        children = list(doc.get("manifests") or [])
    else:
        cfg = doc.get("config")
        if cfg is not None:
            blobs.append(cfg)
        blobs.extend(doc.get("layers") or [])
    for d in [*blobs, *children]:
        if not (isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("size"), int)):
            raise ManifestInvalid(f"{where}: a descriptor lacks a digest or size: {d!r}")
        if not is_digest(d["digest"], ALGORITHMS):
            raise ManifestInvalid(f"{where}: unsupported or malformed digest {d['digest']!r}")
    return blobs, children
