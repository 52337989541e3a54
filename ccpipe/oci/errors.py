"""Errors of OCI image layouts on disk (:mod:`ccpipe.oci.layout`), with stable ``oci.`` codes.

Every class here is final: a layout that is missing, malformed or corrupt stays so when read
again. The registry client's errors are :mod:`ccpipe.oci.registry.errors`.

Imports nothing of the project but ``ccpipe.schemas.errors``.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError


class OciLayoutError(CcpipeError):
    """An OCI image layout on disk is missing, malformed or inconsistent."""

    code = "oci.layout.invalid"
    default_hint = "check the OCI image layout directory (oci-layout, index.json, blobs/)"


class BlobMissing(OciLayoutError):
    """A descriptor names a blob the layout does not hold."""

    code = "oci.blob.missing"


class BlobDigestMismatch(OciLayoutError):
    """A blob's bytes do not hash to its name."""

    code = "oci.blob.digest"
    default_hint = "the layout is corrupt or was tampered with; rebuild or re-copy it"


class RefNotFound(OciLayoutError):
    """No manifest in index.json carries the requested reference name."""

    code = "oci.ref.not_found"
    default_hint = "list the names with `skopeo inspect` or look at index.json's org.opencontainers.image.ref.name"
