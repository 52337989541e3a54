"""Image-level encryption and decryption between OCI layouts, compatible with skopeo/ocicrypt.

:func:`encrypt_image` rewrites an image manifest the way ocicrypt does: each encrypted layer
gets ``+encrypted`` appended to its media type, the ciphertext's digest, the same size, and the
annotations ``org.opencontainers.image.enc.pubopts`` plus one key annotation per kind of
recipient. The config (with the plaintext ``diff_ids``) is copied unchanged.
:func:`decrypt_image` reverses it, checks every layer's HMAC and plaintext digest, and drops
every ``org.opencontainers.image.enc.*`` annotation.

Layers are streamed file to file (see ``ocicrypt.py``), so memory stays flat. A layer that fails
a check leaves no blob and no tag behind in the destination.

Imports nothing of the project but ``stages.sign``'s own modules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.sign import _layout as layout
from stages.sign.errors import RecipientInvalid, UnsupportedLayer
from stages.sign.ocicrypt import (
    ANNOTATION_PREFIX,
    ANNOTATION_PUBOPTS,
    PublicOptions,
    decrypt_stream,
    encrypt_stream,
)
from stages.sign.recipients import (
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

Ref = str | os.PathLike[str] | layout.LayoutRef


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


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _check_oci(manifest: dict[str, Any], desc: dict[str, Any]) -> None:
    media_type = manifest.get("mediaType", desc.get("mediaType", layout.OCI_MANIFEST))
    if media_type != layout.OCI_MANIFEST:
        raise UnsupportedLayer(f"manifest type {media_type} cannot carry encrypted layers; convert the image to OCI")


def _finish(dst: layout.LayoutRef, src_desc: dict[str, Any], manifest: dict[str, Any]) -> tuple[str, int]:
    raw = _dump(manifest)
    digest = layout.write_blob(dst.path, raw)
    new_desc: dict[str, Any] = {"mediaType": layout.OCI_MANIFEST, "digest": digest, "size": len(raw)}
    if "platform" in src_desc:
        new_desc["platform"] = src_desc["platform"]
    layout.tag_manifest(dst.path, new_desc, dst.ref)
    return digest, len(raw)


def encrypt_image(
    src: Ref, dst: Ref, recipients: Sequence[Recipient], *, layers: Sequence[int] | None = None
) -> ImageResult:
    """Encrypt the image ``src`` (``[oci:]DIR[:TAG]``) into the layout ``dst`` for ``recipients``.

    ``layers`` picks layer indexes (negative ones count from the end); all by default, like
    skopeo. ``dst`` gets the source tag when it names none. Raises :class:`UnsupportedLayer`
    (non-OCI or already encrypted layer), :class:`RecipientInvalid`, :class:`LayoutError`.
    """
    s, d = layout.LayoutRef.parse(src), layout.LayoutRef.parse(dst)
    if d.ref is None:
        d = layout.LayoutRef(d.path, s.ref)
    if not recipients:
        raise RecipientInvalid("encrypting needs at least one recipient (jwe:PUB.pem or a KBS image key)")
    src_desc, _, manifest = layout.read_manifest(s.path, s.ref)
    _check_oci(manifest, src_desc)
    count = len(manifest["layers"])
    chosen = set(range(count)) if layers is None else {i % count for i in layers if -count <= i < count}
    layout.init_layout(d.path)
    layout.copy_blob(s.path, d.path, manifest["config"]["digest"])
    changes: list[LayerChange] = []
    new_layers: list[dict[str, Any]] = []
    for i, desc in enumerate(manifest["layers"]):
        media_type = desc.get("mediaType", "")
        if i not in chosen:
            layout.copy_blob(s.path, d.path, desc["digest"])
            new_layers.append(desc)
            changes.append(LayerChange(media_type, desc["digest"], desc["digest"], desc.get("size", 0), False))
            continue
        if media_type.endswith(ENCRYPTED_SUFFIX):
            raise UnsupportedLayer(f"layer {i} ({desc['digest']}) is already encrypted")
        if media_type not in ENCRYPTABLE_MEDIA_TYPES:
            raise UnsupportedLayer(f"layer {i} has media type {media_type!r}, which ocicrypt does not encrypt")
        with layout.open_blob(s.path, desc["digest"]) as f_in, layout.new_blob_file(d.path) as (f_out, tmp):
            sealed = encrypt_stream(f_in, f_out, expected_digest=desc["digest"])
            f_out.close()
            layout.commit_blob_file(d.path, tmp, sealed.cipher_digest)
        annotations = {
            **desc.get("annotations", {}),
            **wrap_private_options(sealed.private, recipients),
            ANNOTATION_PUBOPTS: sealed.public.to_annotation(),
        }
        new_desc = {
            **desc,
            "mediaType": media_type + ENCRYPTED_SUFFIX,
            "digest": sealed.cipher_digest,
            "size": sealed.size,
            "annotations": annotations,
        }
        new_layers.append(new_desc)
        changes.append(LayerChange(new_desc["mediaType"], sealed.cipher_digest, desc["digest"], sealed.size, True))
    digest, size = _finish(d, src_desc, {**manifest, "layers": new_layers})
    kids = tuple(dict.fromkeys(r.key.kid for r in recipients if isinstance(r, KbsRecipient)))
    return ImageResult(d.path, d.ref, digest, size, src_desc["digest"], tuple(changes), kids)


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
    ``--decryption-key``), :class:`ImageKey` objects, or a
    resolver ``kid -> KEK`` (for KBS-wrapped layers). Raises :class:`NoDecryptionKey`,
    :class:`HmacMismatch`, :class:`PlaintextDigestMismatch`, :class:`EncryptionMetadataInvalid`,
    :class:`UnsupportedCipher`, :class:`LayoutError`; a failing layer leaves no output and no tag.
    """
    s, d = layout.LayoutRef.parse(src), layout.LayoutRef.parse(dst)
    if d.ref is None:
        d = layout.LayoutRef(d.path, s.ref)
    keys = [load_decryption_key(k) if isinstance(k, (str, os.PathLike)) else k for k in private_keys]
    src_desc, _, manifest = layout.read_manifest(s.path, s.ref)
    layout.init_layout(d.path)
    layout.copy_blob(s.path, d.path, manifest["config"]["digest"])
    changes: list[LayerChange] = []
    new_layers: list[dict[str, Any]] = []
    for desc in manifest["layers"]:
        media_type = desc.get("mediaType", "")
        if not media_type.endswith(ENCRYPTED_SUFFIX):
            layout.copy_blob(s.path, d.path, desc["digest"])
            new_layers.append(desc)
            changes.append(LayerChange(media_type, desc["digest"], desc["digest"], desc.get("size", 0), False))
            continue
        annotations: dict[str, str] = desc.get("annotations", {})
        public = PublicOptions.from_annotations(annotations)
        private = unwrap_private_options(annotations, keys)
        layout.check_digest(private.digest)
        with layout.open_blob(s.path, desc["digest"]) as f_in, layout.new_blob_file(d.path) as (f_out, tmp):
            plain_digest, size = decrypt_stream(f_in, f_out, private, public, expected_cipher_digest=desc["digest"])
            f_out.close()
            layout.commit_blob_file(d.path, tmp, plain_digest)
        kept = {k: v for k, v in annotations.items() if not k.startswith(ANNOTATION_PREFIX)}
        new_desc = {
            **desc,
            "mediaType": media_type.removesuffix(ENCRYPTED_SUFFIX),
            "digest": plain_digest,
            "size": size,
        }
        new_desc.pop("annotations", None)
        if kept:
            new_desc["annotations"] = kept
        new_layers.append(new_desc)
        changes.append(LayerChange(new_desc["mediaType"], plain_digest, desc["digest"], size, True))
    digest, msize = _finish(d, src_desc, {**manifest, "layers": new_layers})
    return ImageResult(d.path, d.ref, digest, msize, src_desc["digest"], tuple(changes))
