"""Digests, media types and manifest parsing shared by the registry client modules.

Imports nothing of the project but ``ccpipe.stages.deploy.errors``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ccpipe.stages.deploy.errors import ManifestInvalid

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST})
#: what a pull accepts, most preferred first
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
#: a manifest larger than this is refused instead of read (the OCI spec suggests 4 MiB)
MAX_MANIFEST = 4 * 1024 * 1024

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")

Json = dict[str, Any]


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    """True if ``value`` is a ``sha256:`` digest (the only algorithm this client writes)."""
    return bool(_DIGEST.match(value))


def check_digest(value: str) -> str:
    """Return ``value`` if it is a sha256 digest; raise :class:`ValueError` otherwise."""
    if not is_digest(value):
        raise ValueError(f"not a sha256 digest: {value!r}")
    return value


def check_repository(value: str) -> str:
    """Return ``value`` if it is a valid repository name; raise :class:`ValueError` otherwise."""
    if not _REPO.match(value) or len(value) > 255:
        raise ValueError(f"not a valid repository name: {value!r}")
    return value


def check_reference(value: str) -> str:
    """Return ``value`` if it is a tag or a sha256 digest; raise :class:`ValueError` otherwise."""
    if not (is_digest(value) or _TAG.match(value)):
        raise ValueError(f"not a tag or digest: {value!r}")
    return value


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``sha256:abc…`` → ``sha256-abc…``."""
    return check_digest(digest).replace(":", "-", 1)


def parse_manifest(body: bytes, where: str) -> Json:
    """Parse manifest/index JSON; raises :class:`ManifestInvalid` naming ``where``."""
    try:
        doc = json.loads(body)
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
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


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
        if not is_digest(d["digest"]):
            raise ManifestInvalid(f"{where}: unsupported or malformed digest {d['digest']!r}")
    return blobs, children
