"""Minimal OCI image-layout I/O for the sign stage (read a tagged manifest, write blobs and tags).

Interim home: ``stages/build/oci_layout.py`` is meant to become the one home of OCI layout I/O.
Everything the sign stage needs goes through the small functions below so that the switch is
one module. Blobs are content-addressed; every read is checked against its digest, and every
write goes through a temporary file renamed into place, so a crash never leaves a blob whose
name lies about its content.

Imports nothing of the project but ``stages.sign.errors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from stages.sign.errors import BlobDigestMismatch, LayoutError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"

_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_MAX_JSON_BLOB = 16 * 1024 * 1024  # a manifest or config larger than this is refused, not read

Json = dict[str, Any]


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


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest; raise :class:`LayoutError`."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise LayoutError(f"malformed digest {digest!r}")
    return digest


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def init_layout(path: Path) -> None:
    """Create an empty OCI layout at ``path`` unless one is there already."""
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = path / "oci-layout"
    if not marker.exists():
        _atomic_write(marker, b'{"imageLayoutVersion":"1.0.0"}')
    if not (path / "index.json").exists():
        write_index(path, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})


def read_index(path: Path) -> Json:
    """The layout's ``index.json``; raises :class:`LayoutError` if absent or malformed."""
    try:
        index = json.loads((path / "index.json").read_bytes())
    except FileNotFoundError as exc:
        raise LayoutError(f"{path} is not an OCI layout (no index.json)") from exc
    except (OSError, ValueError) as exc:
        raise LayoutError(f"cannot read {path}/index.json: {exc}") from exc
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise LayoutError(f"{path}/index.json is not an OCI image index")
    index.setdefault("manifests", [])
    return index


def write_index(path: Path, index: Json) -> None:
    """Replace ``index.json`` atomically."""
    _atomic_write(path / "index.json", json.dumps(index, separators=(",", ":")).encode())


def find_descriptor(path: Path, ref: str | None) -> Json:
    """The index entry for ``ref`` (a tag or a digest), or the only entry when ``ref`` is None."""
    manifests: list[Json] = read_index(path)["manifests"]
    if ref is None:
        if len(manifests) != 1:
            raise LayoutError(f"{path} holds {len(manifests)} images; name one with DIR:TAG")
        return manifests[0]
    for desc in manifests:
        if desc.get("annotations", {}).get(REF_NAME) == ref or desc.get("digest") == ref:
            return desc
    raise LayoutError(f"no image tagged {ref!r} in {path}")


def find_tagged(path: Path, tag: str) -> Json | None:
    """The index entry tagged ``tag``, or None."""
    manifests: list[Json] = read_index(path)["manifests"]
    for desc in manifests:
        if desc.get("annotations", {}).get(REF_NAME) == tag:
            return desc
    return None


def read_manifest(path: Path, ref: str | None) -> tuple[Json, bytes, Json]:
    """``(descriptor, manifest bytes, manifest)`` of the image manifest ``ref`` names.

    Only single-platform image manifests are handled; an image index is refused.
    """
    desc = find_descriptor(path, ref)
    raw = read_blob(path, desc["digest"])
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise LayoutError(f"manifest {desc['digest']} is not JSON") from exc
    media_type = manifest.get("mediaType", desc.get("mediaType"))
    if media_type in (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"):
        raise LayoutError(f"{ref or desc['digest']} is a multi-platform index; pick one platform's manifest")
    if not isinstance(manifest.get("layers"), list) or not isinstance(manifest.get("config"), dict):
        raise LayoutError(f"manifest {desc['digest']} has no config or layers")
    return desc, raw, manifest


def blob_path(path: Path, digest: str) -> Path:
    """Where the blob named ``digest`` lives (the digest is validated first)."""
    algo, _, hexpart = check_digest(digest).partition(":")
    return path / "blobs" / algo / hexpart


def has_blob(path: Path, digest: str) -> bool:
    """Whether the layout holds a blob named ``digest``."""
    return blob_path(path, digest).is_file()


def read_blob(path: Path, digest: str, max_size: int = _MAX_JSON_BLOB) -> bytes:
    """A small blob's bytes, checked against its digest."""
    p = blob_path(path, digest)
    try:
        with p.open("rb") as f:
            # size first: read(n) would allocate n bytes up front
            if os.fstat(f.fileno()).st_size > max_size:
                raise LayoutError(f"blob {digest} is larger than {max_size} bytes")
            data = f.read()
    except FileNotFoundError as exc:
        raise LayoutError(f"blob {digest} is missing from {path}") from exc
    algo = digest.partition(":")[0]
    if f"{algo}:" + hashlib.new(algo, data).hexdigest() != digest:
        raise BlobDigestMismatch(f"blob {digest} in {path} does not match its digest")
    return data


def open_blob(path: Path, digest: str) -> io.BufferedReader:
    """Open a (possibly large) blob for streaming; the caller checks the digest while reading."""
    try:
        return blob_path(path, digest).open("rb")
    except FileNotFoundError as exc:
        raise LayoutError(f"blob {digest} is missing from {path}") from exc


def write_blob(path: Path, data: bytes) -> str:
    """Store ``data`` as a sha256 blob; returns its digest."""
    digest = sha256_digest(data)
    target = blob_path(path, digest)
    if not target.exists():
        _atomic_write(target, data)
    return digest


@contextlib.contextmanager
def new_blob_file(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file inside the layout for a streamed blob; removed unless :func:`commit_blob_file`.

    Kept in the layout's ``blobs`` folder so the final rename stays on one file system.
    """
    folder = path / "blobs"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".partial-", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        tmp.unlink(missing_ok=True)


def commit_blob_file(path: Path, tmp: Path, digest: str) -> None:
    """Move a finished temporary blob to its content address."""
    target = blob_path(path, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def copy_blob(src: Path, dst: Path, digest: str) -> None:
    """Copy one blob between layouts (nothing to do if ``dst`` has it already)."""
    target = blob_path(dst, digest)
    if target.exists():
        return
    with new_blob_file(dst) as (f, tmp):
        with open_blob(src, digest) as s:
            shutil.copyfileobj(s, f, 1 << 20)
        f.close()
        commit_blob_file(dst, tmp, digest)


def tag_manifest(path: Path, descriptor: Json, tag: str | None) -> None:
    """Add ``descriptor`` to ``index.json``; a tag moves from any image that had it before."""
    index = read_index(path)
    entry = dict(descriptor)
    kept: list[Json] = []
    for desc in index["manifests"]:
        name = desc.get("annotations", {}).get(REF_NAME)
        if tag is not None and name == tag:
            continue
        if tag is None and name is None and desc.get("digest") == entry["digest"]:
            continue
        kept.append(desc)
    if tag is not None:
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: tag}
    kept.append(entry)
    index["manifests"] = kept
    write_index(path, index)


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
