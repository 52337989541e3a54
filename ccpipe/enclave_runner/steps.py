"""The image steps of a launch: pull by digest, verify the signature, then decrypt.

Each step wraps the part that owns the capability (``ccpipe.oci.registry`` pulls,
``ccpipe.stages.sign`` verifies and decrypts) and turns its errors into the runner's: a signature that
does not verify with the key the KBS released is :class:`~ccpipe.enclave_runner.errors.ImageNotTrusted`
and nothing is decrypted; a registry that does not answer is
:class:`~ccpipe.enclave_runner.errors.ImagePullFailed` (transient).
"""

from __future__ import annotations

from pathlib import Path

from ccpipe.enclave_runner.errors import ImageInvalid, ImageNotTrusted, ImagePullFailed
from ccpipe.oci.errors import OciLayoutError
from ccpipe.oci.registry import Credentials, RegistryClient, pull_to_layout
from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.events import Pushed
from ccpipe.stages.sign import ImageKey, decrypt_image, verify_image
from ccpipe.stages.sign.errors import EncryptionError, SigningError

PLAIN_TAG = "workload"
"""Name of the decrypted image in the workspace's plain layout."""


async def pull_image(
    pushed: Pushed, layout: Path, *, tls: bool = False, ca: Path | None = None, credentials: Credentials | None = None
) -> str:
    """Pull ``pushed.repository@pushed.image_digest`` (and its ``.sig``) into ``layout``; returns the digest.

    Raises :class:`ImagePullFailed` (registry unreachable: transient) or :class:`ImageInvalid`
    (missing manifest, content that does not match its digest).
    """
    try:
        async with RegistryClient(pushed.registry, plain_http=not tls, ca_file=ca, credentials=credentials) as client:
            return await pull_to_layout(client, pushed.repository, pushed.image_digest, layout, attachments=True)
    except TransientError as exc:
        raise ImagePullFailed(f"pulling {pushed.reference} failed: {exc.message}") from exc
    except CcpipeError as exc:
        raise ImageInvalid(f"pulling {pushed.reference} failed: {exc.message}", hint=exc.hint) from exc


def verify_pulled(layout: Path, pushed: Pushed, pubkey_pem: bytes) -> None:
    """Check the pulled image's cosign signature with ``pubkey_pem``, for ``<registry>/<repository>``.

    Raises :class:`ImageNotTrusted` for a missing or foreign signature, a signature of another
    image or identity, or a public key that does not parse.
    """
    identity = f"{pushed.registry}/{pushed.repository}"
    try:
        verify_image(layout, pushed.image_digest, pubkey_pem, identity=identity)
    except (SigningError, OciLayoutError) as exc:
        raise ImageNotTrusted(
            f"the signature of {pushed.image_digest} does not verify with the key the KBS released "
            f"for this workload: {exc.message}"
        ) from exc


def decrypt_pulled(pulled: Path, plain: Path, digest: str, key_id: str, image_key: bytes) -> str:
    """Decrypt image ``digest`` of ``pulled`` into ``plain`` with the KBS image key; returns the plain digest.

    Raises :class:`ImageInvalid` when a layer does not open with that key or fails its checks.
    """
    try:
        result = decrypt_image(f"oci:{pulled}:{digest}", f"oci:{plain}:{PLAIN_TAG}", [ImageKey(key_id, image_key)])
    except (EncryptionError, OciLayoutError) as exc:
        raise ImageInvalid(f"decrypting {digest} failed: {exc.message}", hint=exc.hint) from exc
    return result.manifest_digest
