"""OCI image layout on disk: content-addressed blobs, ``index.json`` and its reference names.

This is the project's one home for reading and writing OCI image layouts
(https://github.com/opencontainers/image-spec/blob/main/image-layout.md); build, sign, deploy
and the node agent use it. It stores and verifies content-addressed blobs and keeps
``index.json`` with ``org.opencontainers.image.ref.name`` tags; the documents it stores are
:mod:`ccpipe.oci.documents`. :class:`LayoutRef` is skopeo's way to name one image of a layout
(``[oci:]DIR[:TAG]``).

Guarantees:

* every blob is written to a temporary file beside its final place and renamed into
  ``blobs/<alg>/<hex>`` only after its digest was computed (and checked, when the caller
  named the digest in advance), so a crash never leaves a blob whose name lies;
* a blob's digest is checked (:func:`check_blob_digest`) before it becomes a path, so a
  digest can never name a file outside ``blobs/``;
* every read that returns bytes or finishes an iteration has checked the digest;
* JSON documents this module writes are RFC 8785 canonical, so equal content gives equal
  digests.

Imports nothing of the project but ``ccpipe.schemas`` and ``ccpipe.oci``'s documents and errors.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Self

from pydantic import BaseModel

from ccpipe.oci.documents import (
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    document_bytes,
    parse_document,
)
from ccpipe.oci.errors import BlobDigestMismatch, BlobMissing, OciLayoutError, RefNotFound
from ccpipe.schemas.digest import OCI_ALGORITHMS, DigestInvalid, parse_digest
from ccpipe.schemas.json_input import load_json

LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20


def check_blob_digest(digest: str) -> tuple[str, str]:
    """Split a blob digest into ``(algorithm, hex)``: the directory and file name it is stored under.

    A layout holds the algorithms the image-spec registers for descriptors (sha256 and sha512,
    :data:`~ccpipe.schemas.digest.OCI_ALGORITHMS`). Raises :class:`OciLayoutError` (code
    ``oci.digest.invalid``) naming the value, so callers that handle layout errors handle it too.
    """
    try:
        return parse_digest(digest, OCI_ALGORITHMS)
    except DigestInvalid as exc:
        raise OciLayoutError(exc.message, code="oci.digest.invalid") from exc


class BlobWriter:
    """A blob being written: hashes what passes through, lands in ``blobs/`` on :meth:`commit`.

    Use it as a context manager; leaving the block without :meth:`commit` (for instance on an
    error) removes the temporary file. It is a plain binary sink (``write``), so it can sit at
    the end of a compression pipeline.
    """

    def __init__(self, layout: OciLayout, media_type: str, *, expected: str | None = None) -> None:
        self._layout = layout
        self._media_type = media_type
        self._expected = expected
        self._alg = check_blob_digest(expected)[0] if expected else "sha256"
        self._hash = hashlib.new(self._alg)
        self._size = 0
        tmp_dir = layout.root / "blobs" / self._alg
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=tmp_dir)
        self._tmp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=0)
        self.descriptor: Descriptor | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` to the blob."""
        assert self._file is not None, "blob already committed"
        self._hash.update(data)
        self._size += len(data)
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:  # pragma: no cover - raw files always return a count
                written = 0
            view = view[written:]
        return len(data)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def commit(self, *, annotations: dict[str, str] | None = None) -> Descriptor:
        """Close, check the digest (if one was expected) and move the blob into place."""
        assert self._file is not None, "blob already committed"
        self._file.close()
        self._file = None
        digest = f"{self._alg}:{self._hash.hexdigest()}"
        if self._expected is not None and digest != self._expected:
            self._tmp.unlink(missing_ok=True)
            raise BlobDigestMismatch(f"content announced as {self._expected} hashes to {digest}")
        final = self._layout.blob_path(digest)
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, final)
        self.descriptor = Descriptor(
            media_type=self._media_type, digest=digest, size=self._size, annotations=annotations or None
        )
        return self.descriptor

    def abort(self) -> None:
        """Drop the blob."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class OciLayout:
    """An OCI image layout directory.

    Open an existing one with :meth:`open`, make a new one with :meth:`create`, or either with
    :meth:`open_or_create`. Methods that read verify digests; methods that write keep the
    layout valid after every step (blobs first, ``index.json`` last, each by atomic rename).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path | str) -> OciLayout:
        """Open an existing layout; raises :class:`OciLayoutError` if ``root`` is not one."""
        root = Path(root)
        marker = root / "oci-layout"
        try:
            data = load_json(marker.read_bytes())
        except FileNotFoundError:
            raise OciLayoutError(
                f"{root} is not an OCI image layout (no oci-layout file)",
                hint="point at a directory made by `skopeo copy … oci:DIR` or `ccpipe build`",
                code="oci.layout.not_found",
            ) from None
        except (OSError, ValueError) as exc:
            raise OciLayoutError(f"{marker} cannot be read: {exc}") from exc
        version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise OciLayoutError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        layout = cls(root)
        layout.read_index()  # fail early on a broken index.json
        return layout

    @classmethod
    def create(cls, root: Path | str) -> OciLayout:
        """Make a new, empty layout at ``root`` (created if missing; must not already be a layout)."""
        root = Path(root)
        if (root / "oci-layout").exists():
            raise OciLayoutError(f"{root} is already an OCI image layout", code="oci.layout.exists")
        root.mkdir(parents=True, exist_ok=True)
        layout = cls(root)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout._write_file("oci-layout", document_bytes({"imageLayoutVersion": LAYOUT_VERSION}))
        layout.write_index(ImageIndex())
        return layout

    @classmethod
    def open_or_create(cls, root: Path | str) -> OciLayout:
        """Open the layout at ``root``, making it first if the directory is absent or empty."""
        root = Path(root)
        if (root / "oci-layout").exists():
            return cls.open(root)
        if root.exists() and any(root.iterdir()):
            raise OciLayoutError(
                f"{root} exists, is not empty and is not an OCI image layout",
                hint="choose an empty or new directory for the output",
                code="oci.layout.not_empty",
            )
        return cls.create(root)

    # -- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (whether or not it exists)."""
        alg, hexpart = check_blob_digest(digest)
        return self.root / "blobs" / alg / hexpart

    def has_blob(self, digest: str) -> bool:
        """True when the blob is present (its content is not checked)."""
        return self.blob_path(digest).is_file()

    def blob_writer(self, media_type: str, *, expected: str | None = None) -> BlobWriter:
        """A :class:`BlobWriter` for streaming a blob in; ``expected`` is checked on commit."""
        return BlobWriter(self, media_type, expected=expected)

    def write_blob(self, data: bytes, media_type: str) -> Descriptor:
        """Store ``data`` and return its descriptor."""
        with self.blob_writer(media_type) as w:
            w.write(data)
            return w.commit()

    def write_document(self, doc: BaseModel | dict[str, Any], media_type: str) -> Descriptor:
        """Store a JSON document as canonical bytes and return its descriptor."""
        return self.write_blob(document_bytes(doc), media_type)

    def add_blob(self, chunks: Iterable[bytes], descriptor: Descriptor) -> Descriptor:
        """Store a blob given as chunks, checking it against ``descriptor`` (digest and size).

        Present blobs are not written again, but still read and checked, so a corrupt copy is
        never trusted. Raises :class:`BlobDigestMismatch` if the chunks do not match.
        """
        if self.has_blob(descriptor.digest):
            self.verify_blob(descriptor.digest, descriptor.size)
            return descriptor
        with self.blob_writer(descriptor.media_type, expected=descriptor.digest) as w:
            for chunk in chunks:
                w.write(chunk)
                if w.size > descriptor.size:
                    raise BlobDigestMismatch(
                        f"content of {descriptor.digest} is longer than the {descriptor.size} bytes announced"
                    )
            if w.size != descriptor.size:
                raise BlobDigestMismatch(
                    f"content of {descriptor.digest} is {w.size} bytes, not the {descriptor.size} announced"
                )
            w.commit()
        return descriptor

    def copy_blob_from(self, other: OciLayout, descriptor: Descriptor) -> Descriptor:
        """Copy one blob from another layout, checking its digest on the way."""
        return self.add_blob(other.iter_blob(descriptor.digest, verify=False), descriptor)

    def iter_blob(self, digest: str, *, chunk_size: int = _CHUNK, verify: bool = True) -> Iterator[bytes]:
        """Yield the blob in chunks; with ``verify``, raise :class:`BlobDigestMismatch` at the end
        if it does not hash to ``digest`` (so a consumer must not act before the iteration ends)."""
        alg = check_blob_digest(digest)[0]
        h = hashlib.new(alg)
        with self.open_blob(digest) as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
                yield chunk
        if verify and f"{alg}:{h.hexdigest()}" != digest:
            raise BlobDigestMismatch(f"blob {digest} in {self.root} hashes to {alg}:{h.hexdigest()}")

    def open_blob(self, digest: str) -> io.BufferedReader:
        """Open a (possibly large) blob for streaming, unchecked: the caller checks the digest while reading.

        Raises :class:`BlobMissing` if the layout does not hold it.
        """
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in {self.root}") from None

    def verify_blob(self, digest: str, size: int | None = None) -> None:
        """Read the whole blob and check its digest (and size, if given)."""
        total = sum(len(c) for c in self.iter_blob(digest))
        if size is not None and total != size:
            raise BlobDigestMismatch(f"blob {digest} in {self.root} is {total} bytes, descriptor says {size}")

    def read_blob(self, digest: str, *, max_size: int = 64 << 20) -> bytes:
        """The blob's bytes, checked; refuses blobs over ``max_size`` (meant for JSON documents)."""
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in {self.root}") from None
        if size > max_size:
            raise OciLayoutError(f"blob {digest} is {size} bytes, more than the {max_size} expected")
        return b"".join(self.iter_blob(digest))

    def read_json(self, descriptor: Descriptor) -> dict[str, Any]:
        """A JSON object blob (a config), checked against its digest."""
        data = self.read_blob(descriptor.digest)
        try:
            doc = load_json(data)
        except ValueError as exc:
            raise OciLayoutError(f"blob {descriptor.digest} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise OciLayoutError(f"blob {descriptor.digest} is not a JSON object")
        return doc

    def read_manifest(self, descriptor: Descriptor) -> ImageManifest:
        """The image manifest that ``descriptor`` names."""
        return parse_document(ImageManifest, self.read_blob(descriptor.digest), f"manifest {descriptor.digest}")

    def read_image_index(self, descriptor: Descriptor) -> ImageIndex:
        """The (nested) image index that ``descriptor`` names."""
        return parse_document(ImageIndex, self.read_blob(descriptor.digest), f"index {descriptor.digest}")

    def write_image(
        self,
        config: dict[str, Any],
        layers: list[Descriptor],
        *,
        tag: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Store ``config`` and an OCI manifest over ``layers`` (whose blobs must be present).

        With ``tag`` the manifest is also named in index.json. Returns the manifest descriptor
        (the tagged entry when tagged).
        """
        for layer in layers:
            if not self.has_blob(layer.digest):
                raise BlobMissing(f"layer {layer.digest} is not in {self.root}")
        config_desc = self.write_document(config, MEDIA_TYPE_CONFIG)
        manifest = ImageManifest(config=config_desc, layers=list(layers), annotations=annotations or None)
        desc = self.write_document(manifest, MEDIA_TYPE_MANIFEST)
        return self.tag(desc, tag) if tag is not None else desc

    def write_referrer(
        self,
        subject: Descriptor,
        artifact_type: str,
        layers: list[Descriptor],
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Store an OCI 1.1 artifact manifest about ``subject`` and list it, untagged, in index.json.

        The manifest has the empty config, ``artifactType`` and ``subject``, as a registry's
        referrers API indexes it; ``layers`` must be present. Returns its index.json entry.
        """
        for layer in layers:
            if not self.has_blob(layer.digest):
                raise BlobMissing(f"layer {layer.digest} is not in {self.root}")
        empty = self.write_blob(b"{}", MEDIA_TYPE_EMPTY)
        manifest = ImageManifest(
            artifact_type=artifact_type,
            config=empty,
            layers=list(layers),
            subject=Descriptor(media_type=subject.media_type, digest=subject.digest, size=subject.size),
            annotations=annotations or None,
        )
        desc = self.write_document(manifest, MEDIA_TYPE_MANIFEST)
        return self.add_untagged(desc.model_copy(update={"artifact_type": artifact_type}))

    def referrers(self, subject_digest: str) -> list[tuple[Descriptor, ImageManifest]]:
        """The untagged manifests of index.json whose ``subject`` is ``subject_digest``, in index order.

        An entry that is not a readable image manifest is no referrer and is skipped.
        """
        found: list[tuple[Descriptor, ImageManifest]] = []
        for desc in self.read_index().manifests:
            if desc.ref_name is not None or desc.digest == subject_digest or desc.media_type != MEDIA_TYPE_MANIFEST:
                continue
            try:
                manifest = self.read_manifest(desc)
            except OciLayoutError:
                continue
            if manifest.subject is not None and manifest.subject.digest == subject_digest:
                found.append((desc, manifest))
        return found

    # -- index.json and tags -------------------------------------------------------------------

    def add_untagged(self, descriptor: Descriptor) -> Descriptor:
        """List ``descriptor`` in index.json without a name, once; returns it."""
        index = self.read_index()
        if not any(d.digest == descriptor.digest and d.ref_name is None for d in index.manifests):
            self.write_index(index.model_copy(update={"manifests": [*index.manifests, descriptor]}))
        return descriptor

    def read_index(self) -> ImageIndex:
        """The layout's ``index.json``."""
        path = self.root / "index.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise OciLayoutError(f"{self.root} has no index.json") from None
        return parse_document(ImageIndex, data, str(path))

    def write_index(self, index: ImageIndex) -> None:
        """Replace ``index.json`` atomically."""
        self._write_file("index.json", document_bytes(index))

    def tag(self, descriptor: Descriptor, name: str) -> Descriptor:
        """Point the reference ``name`` at ``descriptor`` in index.json; returns the stored entry.

        Any other entry carrying that name loses it (and is dropped when nothing else names it
        or it has no other annotation), as ``skopeo copy`` does.
        """
        if not _valid_ref_name(name):
            raise OciLayoutError(f"{name!r} is not a valid reference name", code="oci.ref.invalid")
        entry = descriptor.with_annotations(**{ANNOTATION_REF_NAME: name})
        kept: list[Descriptor] = []
        for d in self.read_index().manifests:
            if d.ref_name == name:
                continue
            kept.append(d)
        kept.append(entry)
        index = self.read_index().model_copy(update={"manifests": kept})
        self.write_index(index)
        return entry

    def resolve(self, name: str | None = None) -> Descriptor:
        """The index.json entry called ``name``; with no name, the only entry.

        Raises :class:`RefNotFound` naming the known references.
        """
        manifests = self.read_index().manifests
        if name is None:
            if len(manifests) == 1:
                return manifests[0]
            known = ", ".join(sorted(d.ref_name or d.digest for d in manifests)) or "none"
            raise RefNotFound(
                f"{self.root} holds {len(manifests)} images, so a reference name is needed (known: {known})"
            )
        for d in manifests:
            if d.ref_name == name:
                return d
        known = ", ".join(sorted(d.ref_name for d in manifests if d.ref_name)) or "none"
        raise RefNotFound(f"{self.root} has no image called {name!r} (known: {known})")

    def find(self, name: str) -> Descriptor | None:
        """The index.json entry called ``name``, or None."""
        try:
            return self.resolve(name)
        except RefNotFound:
            return None

    def resolve_image(self, ref: str | None) -> Descriptor:
        """The index.json entry for ``ref``: a reference name, a manifest digest, or None for the only entry.

        Raises :class:`RefNotFound`.
        """
        if ref is not None and ref.startswith(tuple(f"{alg}:" for alg in OCI_ALGORITHMS)):
            for desc in self.read_index().manifests:
                if desc.digest == ref:
                    return desc
            raise RefNotFound(f"{self.root} has no image with manifest {ref}")
        return self.resolve(ref)

    # -- helpers -------------------------------------------------------------------------------

    def _write_file(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


_REF_NAME_RE = re.compile(r"[A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*(/[A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*)*")


def _valid_ref_name(name: str) -> bool:
    """The image-layout grammar for ``org.opencontainers.image.ref.name``."""
    return bool(_REF_NAME_RE.fullmatch(name))


@dataclass(frozen=True)
class LayoutRef:
    """An image in an OCI layout: the directory and an optional tag (or manifest digest)."""

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
