"""OCI capabilities every part of the flow shares, each in one home.

- :mod:`.documents` — media types, annotations, descriptors, manifests and indexes;
- :mod:`.layout` — OCI image layouts on disk (blobs checked against their digests,
  ``index.json`` reference names, skopeo-style ``[oci:]DIR[:TAG]`` references);
- :mod:`.registry` — the async OCI distribution client (push, pull, referrers);
- :mod:`.cosign_names` — cosign's ``sha256-<hex>.sig`` / ``.att`` tags, the referrers fallback
  tag, and the media types and annotations of signatures;
- :mod:`.errors` — the layout's errors (``oci.*`` codes).

Digests themselves are part of the contract: :mod:`ccpipe.schemas.digest`. This package imports
``ccpipe.schemas`` and nothing else of the project; stages and the node agent import it.
"""
