"""Image-level encryption and decryption between OCI layouts, compatible with skopeo/ocicrypt.

:func:`encrypt_image` rewrites an image manifest the way ocicrypt does: each encrypted layer
gets ``+encrypted`` appended to its media type, the ciphertext's digest, the same size, and the
annotations ``org.opencontainers.image.enc.pubopts`` plus one key annotation per kind of
recipient. The config (with the plaintext ``diff_ids``) is copied unchanged.
:func:`decrypt_image` reverses it, checks every layer's HMAC and plaintext digest, and drops
every ``org.opencontainers.image.enc.*`` annotation.

Layers are streamed file to file (see ``ocicrypt.py``), so memory stays flat. A layer that fails
a check leaves no blob and no tag behind in the destination.

Imports nothing of the project but ``ccpipe.stages.sign``'s own modules.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ccpipe.oci.documents import MEDIA_TYPE_MANIFEST, Descriptor, ImageManifest
from ccpipe.oci.errors import BlobDigestMismatch
from ccpipe.oci.layout import LayoutRef, OciLayout, check_blob_digest
from ccpipe.stages.sign._layout import open_image
from ccpipe.stages.sign.errors import PlaintextDigestMismatch, RecipientInvalid, UnsupportedLayer
from ccpipe.stages.sign.ocicrypt import (
    ANNOTATION_PREFIX,
    ANNOTATION_PUBOPTS,
    PublicOptions,
    decrypt_stream,
    encrypt_stream,
)
from ccpipe.stages.sign.recipients import (
    DecryptionKey,
    ImageKey,
    KbsRecipient,
    Recipient,
    load_decryption_key,
    unwrap_private_options,
    wrap_private_options,
)

ENCRYPTED_SUFFIX = "+encrypted"
ENCRYPTABLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.wasm.content.layer.v1+wasm",
    }
)

Ref = str | os.PathLike[str] | LayoutRef


@dataclass(frozen=True)
class LayerChange:
    """One layer before and after (en|de)cryption."""

    media_type: str
    """Media type after the operation."""
    digest: str
    """Digest after the operation (ciphertext digest when encrypting)."""
    source_digest: str
    """Digest before the operation."""
    size: int
    changed: bool
    """False for a layer copied as is (not selected, or not encrypted)."""


@dataclass(frozen=True)
class ImageResult:
    """What :func:`encrypt_image` or :func:`decrypt_image` wrote. Holds no key material."""

    layout: Path
    ref: str | None
    manifest_digest: str
    manifest_size: int
    source_manifest_digest: str
    layers: tuple[LayerChange, ...]
    key_resources: tuple[str, ...] = ()
    """KBS resource URIs the layers are wrapped for (encryption only)."""


def _check_oci(manifest: ImageManifest, desc: Descriptor) -> None:
    media_type = manifest.media_type or desc.media_type
    if media_type != MEDIA_TYPE_MANIFEST:
        raise UnsupportedLayer(f"manifest type {media_type} cannot carry encrypted layers; convert the image to OCI")


def _finish(
    dst: OciLayout, ref: str | None, src_desc: Descriptor, manifest: ImageManifest
) -> Descriptor:
    desc = dst.write_document(manifest, MEDIA_TYPE_MANIFEST)
    if src_desc.platform is not None:
        desc = desc.model_copy(update={"platform": src_desc.platform})
    if ref is not None:
        return dst.tag(desc, ref)
    index = dst.read_index()  # untagged, as skopeo leaves an image copied to a bare DIR
    kept = [d for d in index.manifests if d.digest != desc.digest or d.ref_name is not None]
    dst.write_index(index.model_copy(update={"manifests": [*kept, desc]}))
    return desc


def encrypt_image(
    src: Ref, dst: Ref, recipients: Sequence[Recipient], *, layers: Sequence[int] | None = None
) -> ImageResult:
    """Encrypt the image ``src`` (``[oci:]DIR[:TAG]``) into the layout ``dst`` for ``recipients``.

    ``layers`` picks layer indexes (negative ones count from the end); all by default, like
    skopeo. ``dst`` gets the source tag when it names none. Raises :class:`UnsupportedLayer`
    (non-OCI manifest, already encrypted layer), :class:`RecipientInvalid`, and
    ``OciLayoutError`` (missing layout, tag or blob; a blob that does not match its digest).
    """
    s, d = LayoutRef.parse(src), LayoutRef.parse(dst)
    if d.ref is None:
        d = LayoutRef(d.path, s.ref)
    if not recipients:
        raise RecipientInvalid("encrypting needs at least one recipient (jwe:PUB.pem or a KBS image key)")
    src_l, src_desc, manifest = open_image(s)
    _check_oci(manifest, src_desc)
    count = len(manifest.layers)
    chosen = set(range(count)) if layers is None else {i % count for i in layers if -count <= i < count}
    dst_l = OciLayout.open_or_create(d.path)
    dst_l.copy_blob_from(src_l, manifest.config)
    changes: list[LayerChange] = []
    new_layers: list[Descriptor] = []
    for i, desc in enumerate(manifest.layers):
        if i not in chosen:
            new_layers.append(dst_l.copy_blob_from(src_l, desc))
            changes.append(LayerChange(desc.media_type, desc.digest, desc.digest, desc.size, False))
            continue
        if desc.media_type.endswith(ENCRYPTED_SUFFIX):
            raise UnsupportedLayer(f"layer {i} ({desc.digest}) is already encrypted")
        if desc.media_type not in ENCRYPTABLE_MEDIA_TYPES:
            raise UnsupportedLayer(f"layer {i} has media type {desc.media_type!r}, which ocicrypt does not encrypt")
        media_type = desc.media_type + ENCRYPTED_SUFFIX
        with src_l.open_blob(desc.digest) as f_in, dst_l.blob_writer(media_type) as writer:
            # the blob writer hashes the ciphertext on its way to disk: no second hash here
            sealed = encrypt_stream(f_in, writer, expected_digest=desc.digest, digest_ciphertext=False)
            annotations = {
                **(desc.annotations or {}),
                **wrap_private_options(sealed.private, recipients),
                ANNOTATION_PUBOPTS: sealed.public.to_annotation(),
            }
            written = writer.commit()
        new_desc = desc.model_copy(
            update={
                "media_type": media_type,
                "digest": written.digest,
                "size": written.size,
                "annotations": annotations,
            }
        )
        new_layers.append(new_desc)
        changes.append(LayerChange(media_type, written.digest, desc.digest, written.size, True))
    out = _finish(dst_l, d.ref, src_desc, manifest.model_copy(update={"layers": new_layers}))
    kids = tuple(dict.fromkeys(r.key.kid for r in recipients if isinstance(r, KbsRecipient)))
    return ImageResult(d.path, d.ref, out.digest, out.size, src_desc.digest, tuple(changes), kids)


def encrypt_image_for_kbs(
    src: Ref, dst: Ref, kid: str, *, extra_recipients: Sequence[Recipient] = ()
) -> tuple[ImageResult, ImageKey]:
    """Encrypt with a fresh per-image key for KBS resource ``kid``; returns the result and the key.

    The caller registers ``key.kek`` at ``key.kid`` in the KBS; the key is nowhere else.
    """
    key = ImageKey.generate(kid)
    return encrypt_image(src, dst, [KbsRecipient(key), *extra_recipients]), key


def decrypt_image(src: Ref, dst: Ref, private_keys: Sequence[DecryptionKey | str | os.PathLike[str]]) -> ImageResult:
    """Decrypt every encrypted layer of ``src`` into the layout ``dst``.

    ``private_keys`` may hold RSA/EC private keys (JWE) or paths of PEM/DER key files (skopeo's
    ``--decryption-key``), :class:`ImageKey` objects, or a resolver ``kid -> KEK`` (for
    KBS-wrapped layers). Raises :class:`NoDecryptionKey`, :class:`HmacMismatch`,
    :class:`PlaintextDigestMismatch`, :class:`EncryptionMetadataInvalid`, :class:`UnsupportedCipher`,
    ``OciLayoutError``; a failing layer leaves no blob behind and the image is not tagged.
    """
    s, d = LayoutRef.parse(src), LayoutRef.parse(dst)
    if d.ref is None:
        d = LayoutRef(d.path, s.ref)
    keys = [load_decryption_key(k) if isinstance(k, (str, os.PathLike)) else k for k in private_keys]
    src_l, src_desc, manifest = open_image(s)
    dst_l = OciLayout.open_or_create(d.path)
    dst_l.copy_blob_from(src_l, manifest.config)
    changes: list[LayerChange] = []
    new_layers: list[Descriptor] = []
    for desc in manifest.layers:
        if not desc.media_type.endswith(ENCRYPTED_SUFFIX):
            new_layers.append(dst_l.copy_blob_from(src_l, desc))
            changes.append(LayerChange(desc.media_type, desc.digest, desc.digest, desc.size, False))
            continue
        annotations = desc.annotations or {}
        public = PublicOptions.from_annotations(annotations)
        private = unwrap_private_options(annotations, keys)
        check_blob_digest(private.digest)
        media_type = desc.media_type.removesuffix(ENCRYPTED_SUFFIX)
        with (
            src_l.open_blob(desc.digest) as f_in,
            dst_l.blob_writer(media_type, expected=private.digest) as writer,
        ):
            # the writer hashes the plaintext; decrypt_stream checks the HMAC and ciphertext digest first
            plain_digest, size = decrypt_stream(
                f_in, writer, private, public, expected_cipher_digest=desc.digest, digest_plaintext=False
            )
            try:
                written = writer.commit()  # checks the plaintext digest before the blob lands
            except BlobDigestMismatch as exc:
                raise PlaintextDigestMismatch(f"decrypted layer does not match {private.digest}") from exc
        kept = {k: v for k, v in annotations.items() if not k.startswith(ANNOTATION_PREFIX)}
        new_layers.append(
            desc.model_copy(
                update={"media_type": media_type, "digest": written.digest, "size": size, "annotations": kept or None}
            )
        )
        changes.append(LayerChange(media_type, plain_digest, desc.digest, size, True))
    out = _finish(dst_l, d.ref, src_desc, manifest.model_copy(update={"layers": new_layers}))
    return ImageResult(d.path, d.ref, out.digest, out.size, src_desc.digest, tuple(changes))
