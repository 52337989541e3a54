"""Errors of the OCI registry client (:mod:`ccpipe.oci.registry`), with stable dotted codes.

:class:`RegistryError` is the family. Every message names the registry, the repository and,
where there is one, the digest or tag, so a person reading a ``failed`` event knows where to
look. The codes start with ``deploy.`` because the deploy stage's ``failed`` events carried them
first; they are part of the contract and stay as they are.

Two kinds sit under :class:`RegistryError`:

* transient failures (:class:`RegistryUnavailable`, :class:`RegistryServerError`,
  :class:`RegistryRateLimited`) also subclass :class:`ccpipe.schemas.errors.TransientError`: the
  client has already retried them (bounded, jittered) and the stage runtime may retry the
  whole step later;
* every other class is permanent: a 4xx answer, a digest that does not match, a certificate
  that is not trusted, a layout that cannot be read — a retry would see the same thing.

Imports nothing of the project but ``ccpipe.schemas.errors``.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, TransientError


class RegistryError(CcpipeError):
    """Base of the OCI registry client's errors."""

    code = "deploy.registry"
    default_hint = "check the registry address, the repository name and the credentials"


# --- transient ---------------------------------------------------------------------------------


class RegistryTransientError(TransientError, RegistryError):
    """The registry could not be reached or did not answer usefully; retried already."""

    code = "deploy.registry.transient"
    default_hint = "the registry may be restarting or overloaded; the step is retried automatically"

    def __init__(
        self, message: str, *, hint: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        #: seconds the server asked us to wait (``Retry-After``), if it said
        self.retry_after = retry_after


class RegistryUnavailable(RegistryTransientError):
    """The connection failed, was reset or timed out."""

    code = "deploy.registry.unavailable"


class RegistryServerError(RegistryTransientError):
    """The registry answered with a 5xx status."""

    code = "deploy.registry.server_error"


class RegistryRateLimited(RegistryTransientError):
    """The registry answered 429 Too Many Requests."""

    code = "deploy.registry.rate_limited"
    default_hint = "the registry throttles this client; the step is retried after the delay it asked for"


class ManifestBlobsCollected(RegistryTransientError):
    """The registry refused a manifest for a blob it does not hold (400 ``MANIFEST_BLOB_UNKNOWN``)
    although the push uploaded every blob first: a garbage collection ran in between (the embedded
    registry's retention, racing a push from another process or host that holds no push lock)."""

    code = "deploy.registry.blob_collected"
    default_hint = "a blob was garbage-collected during the push; the push is retried and uploads it again"


# --- permanent ---------------------------------------------------------------------------------


class RegistryTlsError(RegistryError):
    """The registry's TLS certificate is not trusted, or the CA file cannot be used."""

    code = "deploy.registry.tls"
    default_hint = "pass the CA that issued the registry's certificate (ca_file), or fix the certificate"


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or asked for a kind of authentication we cannot do."""

    code = "deploy.registry.auth"
    default_hint = "check the registry user name and password (or token service) configured for ccpipe"


class RegistryDenied(RegistryError):
    """The registry answered 403: authenticated, but not allowed to do this."""

    code = "deploy.registry.denied"
    default_hint = "grant the ccpipe account push/pull rights on the repository"


class RegistryRequestRejected(RegistryError):
    """The registry answered a 4xx that no more specific class covers."""

    code = "deploy.registry.rejected"


class ReferenceInvalid(RegistryError):
    """A repository name, tag or digest is malformed (refused before any request is sent)."""

    code = "deploy.registry.reference_invalid"
    default_hint = "repository names are lower-case [a-z0-9._-/]; digests are sha256:<64 hex>"


class BlobMissing(RegistryError):
    """A blob the registry should hold is not there (404, or absent after an upload)."""

    code = "deploy.registry.blob_missing"
    default_hint = "push the image again; the registry may have garbage-collected the blob"


class ManifestNotFound(RegistryError):
    """No manifest exists under the requested tag or digest."""

    code = "deploy.registry.manifest_not_found"
    default_hint = "check the tag or digest, e.g. with `skopeo inspect docker://REGISTRY/REPO:TAG`"


class DigestMismatch(RegistryError):
    """Bytes do not hash to the digest that names them (a lying registry, or corrupt data)."""

    code = "deploy.registry.digest_mismatch"
    default_hint = "the content was altered in transit or in storage; it was refused and nothing was written"


class ManifestInvalid(RegistryError):
    """A manifest or index is not valid JSON of the expected shape."""

    code = "deploy.registry.manifest_invalid"


class LayoutInvalid(RegistryError):
    """An OCI image layout to push from cannot be read, or lacks what it names."""

    code = "deploy.layout.invalid"
    default_hint = "check the OCI layout directory (oci-layout, index.json, blobs/) and the tag"
