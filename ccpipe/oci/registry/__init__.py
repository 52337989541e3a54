"""OCI registry client: a pure async library over the distribution API.

No NATS, no FastStream: the deploy stage (which pushes), the build stage (which fetches
registry bases) and ``enclave_runner`` (which pulls) call these. Errors are
:mod:`ccpipe.oci.registry.errors`.

- :class:`RegistryClient` — blobs (HEAD, mount, monolithic/chunked upload, verified download),
  manifests (push by tag or digest, verified pull), tags; Bearer/Basic auth, custom CA,
  bounded jittered retries of transient failures.
- :func:`push_layout` / :func:`pull_to_layout` — whole images to/from an OCI layout,
  blobs always before manifests.
- :func:`list_referrers` / :func:`record_referrer` — OCI 1.1 referrers, with the
  ``sha256-<hex>`` tag-schema fallback.
"""

from ccpipe.oci.registry.auth import Credentials
from ccpipe.oci.registry.client import Manifest, RegistryClient
from ccpipe.oci.registry.docker_ref import DockerRef
from ccpipe.oci.registry.pull import pull_to_layout
from ccpipe.oci.registry.push import push_attachments, push_layout, push_tree
from ccpipe.oci.registry.referrers import list_referrers, record_referrer, referrers_supported
from ccpipe.oci.registry.transport import RegistryStats, RetryPolicy

__all__ = [
    "Credentials",
    "DockerRef",
    "Manifest",
    "RegistryClient",
    "RegistryStats",
    "RetryPolicy",
    "list_referrers",
    "pull_to_layout",
    "push_attachments",
    "push_layout",
    "push_tree",
    "record_referrer",
    "referrers_supported",
]
