"""OCI documents: media types, annotations, descriptors, manifests and indexes.

The shapes the image-spec defines (https://github.com/opencontainers/image-spec), as pydantic
models that keep unknown fields, and the canonical bytes ccpipe writes for them. Configs stay
plain JSON objects (``dict``) because their schema is open-ended. Nothing here touches a disk or
a network: :mod:`ccpipe.oci.layout` stores these documents, :mod:`ccpipe.oci.registry` moves them.

Imports nothing of the project but ``ccpipe.schemas`` and ``ccpipe.oci.errors``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccpipe.oci.errors import OciLayoutError
from ccpipe.schemas.canonical import canonical_json

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
"""The config of an artifact manifest that has none (content ``{}``), per image-spec 1.1."""
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MEDIA_TYPE_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_MEDIA_TYPE_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_MANIFEST, DOCKER_MEDIA_TYPE_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_INDEX, DOCKER_MEDIA_TYPE_MANIFEST_LIST})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"


class _OciModel(BaseModel):
    # OCI documents may carry fields this module does not know; keep them so a document that
    # is read and written back does not lose anything.
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class Platform(_OciModel):
    """The platform an image runs on (``architecture``/``os`` as Go spells them)."""

    architecture: str = Field(description="CPU architecture: amd64, arm64, …")
    os: str = Field(description="Operating system: linux, …")
    os_version: str | None = Field(default=None, alias="os.version", description="OS version (Windows).")
    os_features: list[str] | None = Field(default=None, alias="os.features", description="Required OS features.")
    variant: str | None = Field(default=None, description="CPU variant, e.g. v8 for arm64.")


class Descriptor(_OciModel):
    """A content descriptor: media type, digest and size of one blob."""

    media_type: str = Field(alias="mediaType", description="Media type of the referenced content.")
    digest: str = Field(description="Digest of the referenced content, sha256:<hex>.")
    size: int = Field(ge=0, description="Size of the referenced content in bytes.")
    urls: list[str] | None = Field(default=None, description="Where else the content can be fetched from.")
    annotations: dict[str, str] | None = Field(default=None, description="Arbitrary metadata.")
    platform: Platform | None = Field(default=None, description="Platform of a manifest in an index.")
    artifact_type: str | None = Field(default=None, alias="artifactType", description="Artifact type (OCI 1.1).")

    @property
    def ref_name(self) -> str | None:
        """The ``org.opencontainers.image.ref.name`` annotation, if any."""
        return (self.annotations or {}).get(ANNOTATION_REF_NAME)

    def with_annotations(self, **updates: str | None) -> Descriptor:
        """A copy with annotations added, replaced or (value ``None``) removed."""
        ann = dict(self.annotations or {})
        for key, value in updates.items():
            if value is None:
                ann.pop(key, None)
            else:
                ann[key] = value
        return self.model_copy(update={"annotations": ann or None})


class ImageManifest(_OciModel):
    """An image manifest (OCI, or Docker schema 2 which has the same shape)."""

    schema_version: int = Field(default=2, alias="schemaVersion", description="Always 2.")
    media_type: str | None = Field(default=MEDIA_TYPE_MANIFEST, alias="mediaType", description="Manifest type.")
    artifact_type: str | None = Field(default=None, alias="artifactType", description="Artifact type (OCI 1.1).")
    config: Descriptor = Field(description="The image configuration blob.")
    layers: list[Descriptor] = Field(default_factory=list, description="Layers, base first.")
    subject: Descriptor | None = Field(default=None, description="The manifest this one refers to (OCI 1.1).")
    annotations: dict[str, str] | None = Field(default=None, description="Arbitrary metadata.")


class ImageIndex(_OciModel):
    """An image index (``index.json`` of a layout, or a multi-platform index)."""

    schema_version: int = Field(default=2, alias="schemaVersion", description="Always 2.")
    media_type: str | None = Field(default=MEDIA_TYPE_INDEX, alias="mediaType", description="Index type.")
    manifests: list[Descriptor] = Field(default_factory=list, description="Manifests (or nested indexes).")
    annotations: dict[str, str] | None = Field(default=None, description="Arbitrary metadata.")


def document_bytes(doc: BaseModel | dict[str, Any]) -> bytes:
    """The bytes this module writes for a JSON document: RFC 8785 canonical JSON."""
    return canonical_json(doc)


M = TypeVar("M", bound=BaseModel)


def parse_document(model: type[M], data: bytes, what: str) -> M:
    """Parse JSON bytes into ``model``; any problem becomes an :class:`OciLayoutError` naming ``what``."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise OciLayoutError(f"{what} is not a valid {model.__name__}: {loc}: {first['msg']}") from exc
