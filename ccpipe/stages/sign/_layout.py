"""The sign stage's way into an OCI layout: the one single-platform image a reference names.

All layout I/O (blobs, digests, ``index.json``, tags, skopeo-style references) is
:mod:`ccpipe.oci.layout`; this module only adds the sign stage's rule on top: an image to sign
or encrypt is one platform's manifest, never a multi-platform index.

Imports nothing of the project but ``ccpipe.oci`` and ``ccpipe.stages.sign.errors``.
"""

from __future__ import annotations

from ccpipe.oci.documents import INDEX_MEDIA_TYPES, Descriptor, ImageManifest
from ccpipe.oci.layout import LayoutRef, OciLayout
from ccpipe.stages.sign.errors import UnsupportedLayer


def open_image(ref: LayoutRef) -> tuple[OciLayout, Descriptor, ImageManifest]:
    """Open the layout and read (and check) the image manifest ``ref`` names.

    Only single-platform image manifests are handled: an index raises :class:`UnsupportedLayer`.
    """
    layout = OciLayout.open(ref.path)
    desc = layout.resolve_image(ref.ref)
    if desc.media_type in INDEX_MEDIA_TYPES:
        raise UnsupportedLayer(f"{ref} is a multi-platform index; pick one platform's manifest first")
    return layout, desc, layout.read_manifest(desc)
