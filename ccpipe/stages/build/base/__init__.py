"""Base images: where an image starts from, read along the flow of one build.

1. :mod:`.resolve`: the recipe's reference (``scratch``, ``oci:PATH[:TAG]``,
   ``REGISTRY/REPO@sha256:…``) checked against what the builder may read (:class:`BaseSources`).
2. :mod:`.blob_sources`: the layout, registry or archive the base's blobs come from, each
   checking content against its digest.
3. :mod:`.load`: indexes followed to the platform's manifest; layers copied into the output
   layout with their digests checked, then their ``diff_id`` checked against the config.
4. :mod:`.fs_index`: the base's file system as its layers leave it (the image builder keeps
   base directories' metadata and base symlinks), and a cache of it per manifest digest.

Making and importing bases, outside a build: :mod:`.busybox` (the deterministic demo base,
from Debian's ``busybox-static``; :mod:`.elf` tells its architecture) and :mod:`.importer`
(an OCI layout, ``oci-archive`` or ``docker-archive`` made a tagged base in a layout).
"""
