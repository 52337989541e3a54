"""Build stage: reproducible OCI images, SLSA provenance, attested build runner.

The pure core is exported here; the FastStream handler (``ccpipe.stages.build.handler``) turns a
``submitted`` event into :func:`build_from_repo` and its :class:`BuildResult` into ``built``.
OCI layout I/O shared with the other stages lives in :mod:`ccpipe.oci.layout`.
"""

from ccpipe.stages.build.base.blob_sources import FetchBlob
from ccpipe.stages.build.base.busybox import make_busybox_base
from ccpipe.stages.build.base.importer import import_base
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.checkout import Checkout, checkout_commit
from ccpipe.stages.build.core import BuildResult, ImageBuild, build_from_repo, build_image
from ccpipe.stages.build.layer import DEFAULT_COMPRESSION, Compression
from ccpipe.stages.build.provenance import BUILDER_ID_LOCAL, BUILDER_ID_TEE_RUNNER, provenance_digest, report_data

__all__ = [
    "BUILDER_ID_LOCAL",
    "BUILDER_ID_TEE_RUNNER",
    "DEFAULT_COMPRESSION",
    "BaseSources",
    "BuildResult",
    "Checkout",
    "Compression",
    "FetchBlob",
    "ImageBuild",
    "build_from_repo",
    "build_image",
    "checkout_commit",
    "import_base",
    "make_busybox_base",
    "provenance_digest",
    "report_data",
]
