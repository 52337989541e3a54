"""Fuzz: OCI manifests and indexes as a registry, an archive or a layout hands them over.

Targets the typed parser (``parse_document``), the registry client's reading of manifests and of
error bodies, and the builder's walk from an index down to a platform's manifest. Each returns a
value or raises its own family: :class:`OciLayoutError`, :class:`RegistryError`, :class:`BuildError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.oci.documents import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Platform,
    document_bytes,
    parse_document,
)
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.registry.errors import RegistryError
from ccpipe.oci.registry.manifests import parse_manifest
from ccpipe.oci.registry.transport import error_for
from ccpipe.stages.build.base.load import pick_manifest
from ccpipe.stages.build.errors import BuildError
from tests.fuzz.fuzz_helpers import TIMEOUT_S, fuzz_settings, json_bytes_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

_D = "sha256:" + "ab" * 32
MANIFEST = json.loads(document_bytes(ImageManifest(
    config=Descriptor(media_type=MEDIA_TYPE_CONFIG, digest=_D, size=2),
    layers=[Descriptor(media_type=MEDIA_TYPE_LAYER_GZIP, digest=_D, size=10, annotations={"a": "b"})],
    annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
)))
INDEX = json.loads(document_bytes(ImageIndex(manifests=[
    Descriptor(media_type=MEDIA_TYPE_MANIFEST, digest=_D, size=300, platform=Platform(architecture=arch, os="linux"))
    for arch in ("amd64", "arm64")
])))
DOCUMENTS = st.one_of(json_bytes_mutations(MANIFEST), json_bytes_mutations(INDEX))


@fuzz_settings()
@given(DOCUMENTS)
def test_fuzz_parse_document_returns_a_model_or_raises_oci_layout_error(data: bytes) -> None:
    parses_or_refuses(lambda d: parse_document(ImageManifest, d, "manifest"), data, OciLayoutError)
    parses_or_refuses(lambda d: parse_document(ImageIndex, d, "index"), data, OciLayoutError)


@fuzz_settings()
@given(DOCUMENTS, st.sampled_from([400, 401, 403, 404, 429, 500]))
def test_fuzz_registry_reads_manifests_and_error_bodies(data: bytes, status: int) -> None:
    parses_or_refuses(lambda d: parse_manifest(d, "registry/repo"), data, RegistryError)
    # error_for turns any answer body into the error to raise; it must never raise itself.
    assert isinstance(error_for(status, {"Retry-After": "x"}, data, "registry/repo", "manifest"), RegistryError)


class _OneDocument:
    """A blob source whose every document is ``data`` (an index that names itself loops)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, digest: str, *, manifest: bool) -> bytes:
        return self.data

    def chunks(self, desc: Descriptor) -> Iterable[bytes]:
        return [self.data]


@fuzz_settings()
@given(DOCUMENTS)
def test_fuzz_builder_picks_a_platform_manifest_or_raises_build_error(data: bytes) -> None:
    linux = Platform(architecture="amd64", os="linux")
    # A document that is JSON but not a valid manifest is the layout's OciLayoutError (also a CcpipeError).
    parses_or_refuses(lambda d: pick_manifest(_OneDocument(d), _D, linux, "base"), data, (BuildError, OciLayoutError))
