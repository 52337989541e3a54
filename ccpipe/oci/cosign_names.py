"""cosign's names: the tags, media types and annotations a signed image travels with.

The sign stage writes these names into an OCI layout, the deploy stage pushes what carries
them, the registry client pulls them along with an image and the node agent reads them back;
all of them take the names from here, so a signature written by one part is found by the others
(and by cosign itself).

* ``sha256-<hex>`` — the tag form of an image digest, and the OCI 1.1 referrers tag schema's
  fallback tag (an index of the image's referrers on registries without the referrers API);
* ``sha256-<hex>.sig`` / ``sha256-<hex>.att`` — cosign's signature and attestation manifests;
* the media types and annotations of their layers, including keyless Sigstore's certificate,
  chain and Rekor bundle;
* cosign 3's default format: a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``)
  as the one layer of an OCI 1.1 referrer manifest of that ``artifactType``, whose ``subject`` is
  the image, annotated with what the bundle holds and the predicate type it signs.

Only sha256 image digests are named (see :func:`ccpipe.schemas.digest.digest_tag`). Imports
nothing of the project but ``ccpipe.schemas.digest``.
"""

from __future__ import annotations

from ccpipe.schemas.digest import digest_tag

SIGNATURE_SUFFIX = ".sig"
ATTESTATION_SUFFIX = ".att"
#: cosign's attachment tags, pulled and pushed along with an image
ATTACHMENT_SUFFIXES = (SIGNATURE_SUFFIX, ATTESTATION_SUFFIX)

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
ANNOTATION_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANNOTATION_CHAIN = "dev.sigstore.cosign/chain"
ANNOTATION_REKOR_BUNDLE = "dev.sigstore.cosign/bundle"

SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
"""The referrer's ``artifactType``, its layer's media type and the bundle's own ``mediaType``."""
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
"""Every bundle version's media type starts so (v0.1 … v0.3 are read alike here)."""
ANNOTATION_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANNOTATION_BUNDLE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
BUNDLE_CONTENT_DSSE = "dsse-envelope"
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
"""The predicate type of cosign 3's image signature: an in-toto statement about the image, predicate ``{}``."""

_TAG_PREFIX = "sha256-"


def referrers_tag(image_digest: str) -> str:
    """The referrers tag schema's tag of an image: ``sha256:<hex>`` → ``sha256-<hex>``.

    Raises :class:`~ccpipe.schemas.digest.DigestInvalid` for anything but a sha256 digest.
    """
    return digest_tag(image_digest)


def signature_tag(image_digest: str) -> str:
    """cosign's signature tag of an image: ``sha256-<hex>.sig``."""
    return referrers_tag(image_digest) + SIGNATURE_SUFFIX


def attestation_tag(image_digest: str) -> str:
    """cosign's attestation tag of an image: ``sha256-<hex>.att``."""
    return referrers_tag(image_digest) + ATTESTATION_SUFFIX


def is_digest_tag(name: str) -> bool:
    """True if ``name`` is derived from an image digest (a referrers tag or a cosign attachment)."""
    return name.startswith(_TAG_PREFIX)


def names_attachment_of(name: str, image_digest: str) -> bool:
    """True if ``name`` is the referrers tag of ``image_digest`` or one of its cosign attachment tags."""
    stem = referrers_tag(image_digest)
    return name == stem or name.startswith(stem + ".")


def repository_for(workload_name: str) -> str:
    """The registry repository of a workload, ``ccpipe/<name>``.

    The deploy stage pushes the image there and the sign stage signs it for that repository (the
    ``docker-reference`` of the signature), so both must name it the same way.
    """
    return f"ccpipe/{workload_name}"
