"""cosign-compatible image signatures and attestations, stored in an OCI layout.

* Signature: the simple-signing payload
  ``{"critical":{"identity":{"docker-reference":…},"image":{"docker-manifest-digest":…},
  "type":"cosign container image signature"},"optional":…}`` signed as is (ECDSA P-256/SHA-256,
  DER, standard base64 in the layer annotation ``dev.cosignproject.cosign/signature``), stored
  as a layer of media type ``application/vnd.dev.cosign.simplesigning.v1+json`` of an OCI image
  manifest tagged ``sha256-<hex>.sig``. More signatures are appended as more layers; the config
  lists the layer digests as ``rootfs.diff_ids``, as cosign writes it.
* Attestation: a DSSE envelope of an in-toto Statement v1 whose subject is the image manifest
  digest, stored as a layer of media type ``application/vnd.dsse.envelope.v1+json`` (annotations
  ``predicateType`` and an empty signature annotation, as cosign writes them) of the manifest
  tagged ``sha256-<hex>.att``.

Keyless Sigstore extension point: :class:`Signer`. A Fulcio/Rekor signer implements ``sign`` with
an ephemeral key and returns, from ``annotations``, ``dev.sigstore.cosign/certificate``,
``dev.sigstore.cosign/chain`` and ``dev.sigstore.cosign/bundle`` (see the reference §2); storage
and the key-based verification here stay as they are.

Imports nothing of the project but ``ccpipe.oci`` and ``ccpipe.stages.sign``'s own modules.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ccpipe.oci.cosign_names import (
    DSSE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIGNATURE_TYPE,
    SIMPLESIGNING_MEDIA_TYPE,
    attestation_tag,
    signature_tag,
)
from ccpipe.oci.documents import Descriptor
from ccpipe.oci.errors import BlobMissing, OciLayoutError
from ccpipe.oci.layout import LayoutRef, OciLayout
from ccpipe.stages.sign._layout import open_image
from ccpipe.stages.sign.dsse import (
    PAYLOAD_TYPE_IN_TOTO,
    Envelope,
    Signature,
    pae,
    parse_statement,
    statement,
    statement_covers,
    verify_envelope,
)
from ccpipe.stages.sign.errors import (
    PayloadInvalid,
    SignatureDigestMismatch,
    SignatureIdentityMismatch,
    SignatureInvalid,
    SignatureMissing,
    SigningError,
)
from ccpipe.stages.sign.keys import PrivateKey, PublicKey, load_public_key, sign_bytes, verify_bytes


class Signer(Protocol):
    """Anything that signs bytes for an image signature: a key, a KMS, a keyless Fulcio flow."""

    def sign(self, data: bytes) -> bytes:
        """The signature over ``data`` (DER ECDSA for cosign keys)."""
        ...

    def annotations(self, payload: bytes, signature: bytes) -> dict[str, str]:
        """Extra layer annotations (keyless: certificate, chain, Rekor bundle); ``{}`` for a key."""
        ...


@dataclass(frozen=True)
class KeySigner:
    """A :class:`Signer` over a private key loaded with ``keys.load_private_key``."""

    key: PrivateKey

    def sign(self, data: bytes) -> bytes:
        """Sign with the key."""
        return sign_bytes(self.key, data)

    def annotations(self, payload: bytes, signature: bytes) -> dict[str, str]:
        """A key-signed signature carries no extra annotations."""
        return {}


@dataclass(frozen=True)
class AttachResult:
    """A signature or attestation written into a layout."""

    image_digest: str
    """Manifest digest of the image that was signed."""
    manifest_digest: str
    """Digest of the ``.sig`` / ``.att`` manifest (``Signed.signature_digest``)."""
    tag: str
    """``sha256-<hex>.sig`` or ``sha256-<hex>.att``."""
    payload: bytes
    """The signed bytes: simple-signing JSON, or the DSSE envelope JSON."""


def simple_signing_payload(identity: str, digest: str, optional: Mapping[str, Any] | None = None) -> bytes:
    """The payload cosign signs for image ``digest`` under ``identity`` (a repository)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": dict(optional) if optional is not None else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _signer(key: PrivateKey | Signer) -> Signer:
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        return KeySigner(key)
    return key


def _public(pubkey: PublicKey | str | Path | bytes) -> PublicKey:
    # a path or PEM bytes, as `ccpipe verify --key NAME.pub` passes it
    return load_public_key(pubkey) if isinstance(pubkey, (str, Path, bytes)) else pubkey


def _image(layout_path: str | Path, ref: str | None) -> tuple[OciLayout, str]:
    """The layout and the manifest digest of image ``ref`` (the manifest is read and checked)."""
    lay, desc, _ = open_image(LayoutRef(Path(layout_path), ref))
    return lay, desc.digest


def _attached_layers(lay: OciLayout, desc: Descriptor) -> list[Descriptor]:
    """The layers of a ``.sig``/``.att`` manifest; a malformed one is :class:`PayloadInvalid`."""
    try:
        return list(lay.read_manifest(desc).layers)
    except BlobMissing:
        raise
    except OciLayoutError as exc:
        raise PayloadInvalid(f"signature manifest {desc.digest} is not an OCI image manifest") from exc


def _append(lay: OciLayout, tag: str, blob: bytes, media_type: str, annotations: dict[str, str]) -> Descriptor:
    """Add one layer to the attachment manifest ``tag`` (made if absent), cosign's read-modify-write."""
    existing = lay.find(tag)
    layers = _attached_layers(lay, existing) if existing is not None else []
    entry = lay.write_blob(blob, media_type).model_copy(update={"annotations": annotations})
    if all(layer.digest != entry.digest or layer.annotations != annotations for layer in layers):
        layers.append(entry)
    config = {
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    return lay.write_image(config, layers, tag=tag)


def sign_image(
    layout_path: str | Path,
    ref: str | None,
    key: PrivateKey | Signer,
    *,
    identity: str | None = None,
    optional: Mapping[str, Any] | None = None,
) -> AttachResult:
    """Sign the image ``ref`` (tag or digest) of a layout, cosign style, and store the ``.sig``.

    ``identity`` is the ``docker-reference`` the signature is for: the registry repository the
    image will be pushed to, as cosign writes it (default: ``ref``). Raises ``OciLayoutError``.
    """
    lay, digest = _image(layout_path, ref)
    payload = simple_signing_payload(identity if identity is not None else (ref or ""), digest, optional)
    signer = _signer(key)
    sig = signer.sign(payload)
    annotations = {SIGNATURE_ANNOTATION: base64.b64encode(sig).decode(), **signer.annotations(payload, sig)}
    tag = signature_tag(digest)
    attached = _append(lay, tag, payload, SIMPLESIGNING_MEDIA_TYPE, annotations)
    return AttachResult(digest, attached.digest, tag, payload)


def _layers(lay: OciLayout, tag: str, media_type: str, what: str) -> list[Descriptor]:
    desc = lay.find(tag)
    if desc is None:
        raise SignatureMissing(f"no {what} for this image (no {tag} in {lay.root})")
    found = [layer for layer in _attached_layers(lay, desc) if layer.media_type == media_type]
    if not found:
        raise SignatureMissing(f"{tag} holds no {media_type} layer")
    return found


def _strict_payload(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
        critical = doc["critical"]
        ok = (
            set(doc) == {"critical", "optional"}
            and set(critical) == {"identity", "image", "type"}
            and critical["type"] == SIGNATURE_TYPE
            and isinstance(critical["image"]["docker-manifest-digest"], str)
            and isinstance(critical["identity"]["docker-reference"], str)
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadInvalid("signature payload is not simple-signing JSON") from exc
    if not ok:
        raise PayloadInvalid("signature payload has unexpected fields or type")
    return dict(doc)


def _raise_best(errors: list[SigningError], kind: str, what: str = "verifies with this key") -> NoReturn:
    # a valid signature for another image or identity says more than a bad signature does
    for cls in (SignatureDigestMismatch, SignatureIdentityMismatch, PayloadInvalid):
        for err in errors:
            if isinstance(err, cls):
                raise err
    # say why, unless every reason is the plain "wrong key" the message already states
    reasons = [e.message for e in errors if "with this key" not in e.message]
    detail = f" ({'; '.join(dict.fromkeys(reasons))})" if reasons else ""
    raise SignatureInvalid(f"none of the {len(errors)} {kind}(s) {what}{detail}")


SignatureCheck = Callable[[bytes, bytes, Mapping[str, str]], str | None]
"""``check(payload, signature, layer annotations)`` → None if the signature is good, else why not."""


def verify_image(
    layout_path: str | Path, ref: str | None, pubkey: PublicKey | str | Path | bytes, *, identity: str | None = None
) -> dict[str, Any]:
    """The verified simple-signing payload of the image ``ref``, signed by ``pubkey``.

    ``pubkey`` is a key object, a PEM file path or PEM bytes. Accepts the first signature that
    verifies over its exact payload bytes, is well-formed, names this image's manifest digest
    and, if ``identity`` is given, that docker-reference (exact match).
    Raises :class:`SignatureMissing`, :class:`SignatureInvalid` (other key, modified payload),
    :class:`SignatureDigestMismatch`, :class:`SignatureIdentityMismatch`, :class:`PayloadInvalid`.
    """
    key = _public(pubkey)

    def check(payload: bytes, sig: bytes, annotations: Mapping[str, str]) -> str | None:
        return None if verify_bytes(key, sig, payload) else "signature does not verify with this key"

    return verify_image_with(layout_path, ref, check, identity=identity, what="verifies with this key")


def verify_image_with(
    layout_path: str | Path,
    ref: str | None,
    check: SignatureCheck,
    *,
    identity: str | None = None,
    what: str = "verifies",
) -> dict[str, Any]:
    """:func:`verify_image` with another signature check (a key, a keyless certificate chain…).

    Raises what :func:`verify_image` raises; ``what`` ends the :class:`SignatureInvalid` message.
    """
    lay, digest = _image(layout_path, ref)
    errors: list[SigningError] = []
    for layer in _layers(lay, signature_tag(digest), SIMPLESIGNING_MEDIA_TYPE, "signature"):
        annotations = layer.annotations or {}
        try:
            payload = lay.read_blob(layer.digest)
            sig = base64.b64decode(annotations.get(SIGNATURE_ANNOTATION, ""), validate=True)
        except (OciLayoutError, binascii.Error, ValueError):
            errors.append(SignatureInvalid("signature payload or annotation was modified"))
            continue
        problem = check(payload, sig, annotations)
        if problem is not None:
            errors.append(SignatureInvalid(problem))
            continue
        try:
            doc = _strict_payload(payload)
        except PayloadInvalid as err:
            errors.append(err)
            continue
        signed = doc["critical"]["image"]["docker-manifest-digest"]
        if signed != digest:
            errors.append(SignatureDigestMismatch(f"signature is for {signed}, not for this image {digest}"))
            continue
        named = doc["critical"]["identity"]["docker-reference"]
        if identity is not None and named != identity:
            errors.append(SignatureIdentityMismatch(f"signature is for {named!r}, not {identity!r}"))
            continue
        return doc
    _raise_best(errors, "signature", what)


def attest_image(
    layout_path: str | Path,
    ref: str | None,
    key: PrivateKey | Signer,
    *,
    predicate_type: str,
    predicate: Mapping[str, Any],
    identity: str | None = None,
) -> AttachResult:
    """Attach a signed in-toto attestation (DSSE) about image ``ref``, like ``cosign attest``.

    The statement's subject is the image manifest digest (named ``identity``, default ``ref``).
    """
    lay, digest = _image(layout_path, ref)
    body = statement([(identity if identity is not None else (ref or ""), digest)], predicate_type, predicate)
    signer = _signer(key)
    sig = signer.sign(pae(PAYLOAD_TYPE_IN_TOTO, body))
    envelope = Envelope(body, PAYLOAD_TYPE_IN_TOTO, (Signature(sig),)).to_json()
    annotations = {
        SIGNATURE_ANNOTATION: "",
        "predicateType": predicate_type,
        **signer.annotations(envelope, sig),
    }
    tag = attestation_tag(digest)
    attached = _append(lay, tag, envelope, DSSE_MEDIA_TYPE, annotations)
    return AttachResult(digest, attached.digest, tag, envelope)


def verify_attestation(
    layout_path: str | Path,
    ref: str | None,
    pubkey: PublicKey | str | Path | bytes,
    *,
    predicate_type: str | None = None,
) -> dict[str, Any]:
    """The verified in-toto statement attached to image ``ref`` (optionally of ``predicate_type``).

    Raises :class:`SignatureMissing`, :class:`SignatureInvalid`, :class:`SignatureDigestMismatch`
    (statement about another image), :class:`PayloadInvalid`.
    """
    key = _public(pubkey)
    lay, digest = _image(layout_path, ref)
    errors: list[SigningError] = []
    for layer in _layers(lay, attestation_tag(digest), DSSE_MEDIA_TYPE, "attestation"):
        try:
            envelope = Envelope.from_json(lay.read_blob(layer.digest))
            payload_type, payload = verify_envelope(envelope, key)
            if payload_type != PAYLOAD_TYPE_IN_TOTO:
                raise PayloadInvalid(f"attestation payload type is {payload_type!r}")
            doc = parse_statement(payload)
        except OciLayoutError:
            errors.append(SignatureInvalid("attestation envelope was modified"))
            continue
        except SigningError as err:
            errors.append(err)
            continue
        if not statement_covers(doc, digest):
            errors.append(SignatureDigestMismatch(f"attestation is not about this image {digest}"))
            continue
        if predicate_type is not None and doc["predicateType"] != predicate_type:
            errors.append(PayloadInvalid(f"attestation is of type {doc['predicateType']!r}"))
            continue
        return doc
    _raise_best(errors, "attestation")
