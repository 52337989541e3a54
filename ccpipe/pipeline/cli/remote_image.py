"""The ``docker://`` side of ``ccpipe sign``, ``verify``, ``attest`` and ``verify-attestation``.

cosign works on images in a registry; so do these commands when given ``docker://HOST/REPO:TAG``
or ``…@sha256:HEX``. The image's manifest (not its layers), its ``.sig`` / ``.att`` tags and its
OCI 1.1 referrers are fetched into a temporary OCI layout, where the same code as for
``oci:DIR`` signs or verifies; what signing added is pushed back (the tags, and the bundle
referrers with the ``sha256-<hex>`` fallback index where the registry lacks the referrers API).
A tag is resolved to its digest once, and that digest is what is signed.

The registry is reached as the pipeline reaches its own: ``CCPIPE_REGISTRY_TLS`` and
``CCPIPE_REGISTRY_CA``; the pipeline's credentials are sent only to the pipeline's registry: the
configured one (``CCPIPE_REGISTRY``), else the embedded registry of the ``ccpipe up`` running for
this data directory, so the image the pipeline pushed there can be verified as it is named in
``pushed`` (``docker://127.0.0.1:PORT/ccpipe/NAME@sha256:…``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ccpipe.oci.registry import DockerRef, RegistryClient, pull_to_layout, push_attachments
from ccpipe.pipeline.services import find_endpoints, registry_credentials
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError

T = TypeVar("T")

ImageWork = Callable[[Path, str], T]
"""``work(layout, image digest)``: what to do with the fetched image."""


def pipeline_registry(settings: Settings) -> str | None:
    """The pipeline's registry: ``CCPIPE_REGISTRY``, else the embedded one of a running ``ccpipe up``
    for this data directory, else None."""
    if settings.registry is not None:
        return settings.registry
    with contextlib.suppress(ConfigurationError):  # nothing running: no registry of the pipeline's to trust
        return find_endpoints(settings).registry
    return None


def _client(settings: Settings, ref: DockerRef) -> RegistryClient:
    # the pipeline's registry password must not travel to any other host that asks for one
    credentials = registry_credentials(settings, "push") if pipeline_registry(settings) == ref.registry else None
    return RegistryClient(
        ref.registry, plain_http=not settings.registry_tls, ca_file=settings.registry_ca, credentials=credentials
    )


async def _run(settings: Settings, ref: DockerRef, work: ImageWork[T], push_back: bool) -> T:
    with tempfile.TemporaryDirectory(prefix="ccpipe-image-") as tmp:
        layout = Path(tmp) / "image"
        async with _client(settings, ref) as client:
            digest = await pull_to_layout(
                client, ref.repository, ref.reference, layout, referrers=True, image_blobs=False
            )
            result = work(layout, digest)
            if push_back:
                await push_attachments(client, layout, ref.repository, digest)
        return result


def on_remote_image(settings: Settings, ref: DockerRef, work: ImageWork[T], *, push_back: bool = False) -> T:
    """Fetch ``ref``'s manifest and attachments, run ``work`` on them, and with ``push_back`` push what it added.

    Raises the registry client's errors and whatever ``work`` raises (nothing is pushed then).
    """
    return asyncio.run(_run(settings, ref, work, push_back))
