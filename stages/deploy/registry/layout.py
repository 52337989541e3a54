"""Minimal OCI image-layout reading and writing for push and pull.

Interim: ``stages/build/oci_layout.py`` (the one home of OCI layout I/O) was not committed yet
when this was written, so the registry client carries the few functions it needs. Reads are
checked against the digest that names them; writes go through a temporary file renamed into
place, so a crash never leaves a blob whose name lies about its content.

Imports nothing of the project but ``stages.deploy.errors`` and ``.digests``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from stages.deploy.errors import DigestMismatch, LayoutInvalid
from stages.deploy.registry.digests import MAX_MANIFEST, OCI_INDEX, Json, is_digest, sha256_digest

REF_NAME = "org.opencontainers.image.ref.name"


def blob_path(layout: Path, digest: str) -> Path:
    """Where blob ``digest`` lives in ``layout``; raises :class:`LayoutInvalid` for a bad digest."""
    if not is_digest(digest):
        raise LayoutInvalid(f"{layout}: unsupported or malformed digest {digest!r}")
    algo, hexpart = digest.split(":", 1)
    return layout / "blobs" / algo / hexpart


def read_index(layout: Path) -> Json:
    """The layout's ``index.json``; raises :class:`LayoutInvalid` if absent or malformed."""
    try:
        doc = json.loads((layout / "index.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise LayoutInvalid(f"{layout} is not a readable OCI layout: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise LayoutInvalid(f"{layout}/index.json is not an OCI index")
    return doc


def read_small_blob(layout: Path, digest: str, limit: int = MAX_MANIFEST) -> bytes:
    """Read a manifest/config-sized blob, verified; raises :class:`LayoutInvalid` / :class:`DigestMismatch`."""
    path = blob_path(layout, digest)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise LayoutInvalid(f"{layout}: blob {digest} is missing: {exc}") from exc
    if len(data) > limit:
        raise LayoutInvalid(f"{layout}: blob {digest} is larger than {limit} bytes")
    if sha256_digest(data) != digest:
        raise DigestMismatch(f"{layout}: blob {digest} does not hash to its name; the layout is corrupt")
    return data


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(1024 * 1024):
            h.update(piece)
    return "sha256:" + h.hexdigest()


def init_layout(layout: Path) -> None:
    """Create an empty OCI layout at ``layout`` unless one is there already."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout / "oci-layout"
    if not marker.exists():
        marker.write_text('{"imageLayoutVersion":"1.0.0"}')
    if not (layout / "index.json").exists():
        _atomic_write(layout / "index.json", b'{"schemaVersion":2,"manifests":[]}')


def write_blob(layout: Path, data: bytes) -> str:
    """Store ``data`` as a blob; returns its digest."""
    digest = sha256_digest(data)
    path = blob_path(layout, digest)
    if not path.exists():
        _atomic_write(path, data)
    return digest


def has_blob(layout: Path, digest: str, size: int) -> bool:
    """True if the layout holds ``digest`` with the right size and content."""
    path = blob_path(layout, digest)
    try:
        return path.stat().st_size == size and file_digest(path) == digest
    except OSError:
        return False


def set_ref(layout: Path, descriptor: Json, ref_name: str | None) -> None:
    """Add ``descriptor`` to ``index.json``, under ``ref_name`` (replacing that name's entry)."""
    index = read_index(layout)
    entry: Json = {k: descriptor[k] for k in ("mediaType", "digest", "size") if k in descriptor}
    if "artifactType" in descriptor:
        entry["artifactType"] = descriptor["artifactType"]
    kept = []
    for m in index.get("manifests", []):
        name = (m.get("annotations") or {}).get(REF_NAME)
        if ref_name is not None and name == ref_name:
            continue
        if ref_name is None and name is None and m.get("digest") == entry["digest"]:
            continue
        kept.append(m)
    if ref_name is not None:
        entry["annotations"] = {REF_NAME: ref_name}
    kept.append(entry)
    index["schemaVersion"] = 2
    index.setdefault("mediaType", OCI_INDEX)
    index["manifests"] = kept
    _atomic_write(layout / "index.json", json.dumps(index, separators=(",", ":")).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
