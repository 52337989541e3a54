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
* Beside each, cosign 3's default format: a Sigstore bundle (:mod:`ccpipe.stages.sign.bundle`)
  as an OCI 1.1 referrer of the image (an untagged manifest of ``artifactType``
  ``application/vnd.dev.sigstore.bundle.v0.3+json`` whose ``subject`` is the image; the deploy
  stage pushes it and records it in the ``sha256-<hex>`` fallback index). It is written when
  the signer has a public key to name (a key; not yet a keyless signer). Verification reads the
  bundles first and the ``.sig`` / ``.att`` second, and says which one verified
  (:class:`Verified`); :func:`verify_image` alone reads only the ``.sig``, as CoCo guests do.

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
    ANNOTATION_BUNDLE_CONTENT,
    ANNOTATION_BUNDLE_PREDICATE_TYPE,
    BUNDLE_CONTENT_DSSE,
    COSIGN_SIGN_PREDICATE_TYPE,
    DSSE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIGNATURE_TYPE,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    SIGSTORE_BUNDLE_PREFIX,
    SIMPLESIGNING_MEDIA_TYPE,
    attestation_tag,
    signature_tag,
)
from ccpipe.oci.documents import Descriptor
from ccpipe.oci.errors import BlobMissing, OciLayoutError
from ccpipe.oci.layout import LayoutRef, OciLayout
from ccpipe.stages.sign._layout import open_image
from ccpipe.stages.sign.bundle import bundle_envelope, bundle_json, key_hint, signature_statement
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
    bundle_digest: str | None = None
    """Digest of the Sigstore bundle referrer written beside it; None for a signer without a public key."""


FORMAT_BUNDLE = "bundle"
"""cosign 3's Sigstore bundle, an OCI 1.1 referrer of the image."""
FORMAT_SIG = "sig"
"""The ``sha256-<hex>.sig`` tag (simple signing)."""
FORMAT_ATT = "att"
"""The ``sha256-<hex>.att`` tag (DSSE envelope)."""


@dataclass(frozen=True)
class Verified:
    """What verified: in which format, where it is stored, and the verified document."""

    format: str
    """:data:`FORMAT_BUNDLE`, :data:`FORMAT_SIG` or :data:`FORMAT_ATT`."""
    image_digest: str
    """The manifest digest of the image it is about."""
    manifest_digest: str
    """The bundle's referrer manifest, or the ``.sig`` / ``.att`` manifest."""
    document: dict[str, Any]
    """The in-toto statement (bundle, ``.att``) or the simple-signing payload (``.sig``)."""


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


def _bundle_hint(signer: Signer) -> str | None:
    # a bundle names its key; a signer that does not show one (keyless) writes no bundle yet
    return key_hint(signer.key.public_key()) if isinstance(signer, KeySigner) else None


def _write_bundle(
    lay: OciLayout, image: Descriptor, envelope: Envelope, hint: str | None, predicate_type: str
) -> str | None:
    """Store ``envelope`` as a Sigstore bundle referrer of ``image``; its manifest digest (None without a hint)."""
    if hint is None:
        return None
    layer = lay.write_blob(bundle_json(envelope, hint), SIGSTORE_BUNDLE_MEDIA_TYPE)
    annotations = {ANNOTATION_BUNDLE_CONTENT: BUNDLE_CONTENT_DSSE, ANNOTATION_BUNDLE_PREDICATE_TYPE: predicate_type}
    return lay.write_referrer(image, SIGSTORE_BUNDLE_MEDIA_TYPE, [layer], annotations).digest


def _public(pubkey: PublicKey | str | Path | bytes) -> PublicKey:
    # a path or PEM bytes, as `ccpipe verify --key NAME.pub` passes it
    return load_public_key(pubkey) if isinstance(pubkey, (str, Path, bytes)) else pubkey


def _image(layout_path: str | Path, ref: str | None) -> tuple[OciLayout, str]:
    """The layout and the manifest digest of image ``ref`` (the manifest is read and checked)."""
    lay, desc = _image_entry(layout_path, ref)
    return lay, desc.digest


def _image_entry(layout_path: str | Path, ref: str | None) -> tuple[OciLayout, Descriptor]:
    """The layout and the index.json entry of image ``ref`` (the manifest is read and checked)."""
    lay, desc, _ = open_image(LayoutRef(Path(layout_path), ref))
    return lay, desc


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
    image will be pushed to, as cosign writes it (default: ``ref``). A key signer also writes
    the Sigstore bundle referrer (the statement's subject is named ``identity``).
    Raises ``OciLayoutError``.
    """
    lay, image = _image_entry(layout_path, ref)
    digest = image.digest
    name = identity if identity is not None else (ref or "")
    payload = simple_signing_payload(name, digest, optional)
    signer = _signer(key)
    sig = signer.sign(payload)
    annotations = {SIGNATURE_ANNOTATION: base64.b64encode(sig).decode(), **signer.annotations(payload, sig)}
    tag = signature_tag(digest)
    attached = _append(lay, tag, payload, SIMPLESIGNING_MEDIA_TYPE, annotations)
    hint = _bundle_hint(signer)
    bundle = None
    if hint is not None:
        body = signature_statement(name, digest)
        envelope = Envelope(body, PAYLOAD_TYPE_IN_TOTO, (Signature(signer.sign(pae(PAYLOAD_TYPE_IN_TOTO, body))),))
        bundle = _write_bundle(lay, image, envelope, hint, COSIGN_SIGN_PREDICATE_TYPE)
    return AttachResult(digest, attached.digest, tag, payload, bundle)


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
    The envelope is stored in the ``.att`` tag and, for a key signer, as a Sigstore bundle referrer.
    """
    lay, image = _image_entry(layout_path, ref)
    digest = image.digest
    body = statement([(identity if identity is not None else (ref or ""), digest)], predicate_type, predicate)
    signer = _signer(key)
    sig = signer.sign(pae(PAYLOAD_TYPE_IN_TOTO, body))
    signed = Envelope(body, PAYLOAD_TYPE_IN_TOTO, (Signature(sig),))
    envelope = signed.to_json()
    annotations = {
        SIGNATURE_ANNOTATION: "",
        "predicateType": predicate_type,
        **signer.annotations(envelope, sig),
    }
    tag = attestation_tag(digest)
    attached = _append(lay, tag, envelope, DSSE_MEDIA_TYPE, annotations)
    # the bundle wraps the very envelope of the .att layer: one signature, two places to find it
    bundle = _write_bundle(lay, image, signed, _bundle_hint(signer), predicate_type)
    return AttachResult(digest, attached.digest, tag, envelope, bundle)


def _statement_of(envelope: Envelope, key: PublicKey, digest: str) -> dict[str, Any]:
    """The in-toto statement of ``envelope`` if it verifies with ``key`` and is about ``digest``.

    Raises :class:`SignatureInvalid`, :class:`PayloadInvalid`, :class:`SignatureDigestMismatch`.
    """
    payload_type, payload = verify_envelope(envelope, key)
    if payload_type != PAYLOAD_TYPE_IN_TOTO:
        raise PayloadInvalid(f"attestation payload type is {payload_type!r}")
    doc = parse_statement(payload)
    if not statement_covers(doc, digest):
        raise SignatureDigestMismatch(f"statement is not about this image {digest}")
    return doc


def _bundles(lay: OciLayout, digest: str, *, signatures: bool) -> list[tuple[str, bytes | None]]:
    """``(referrer manifest digest, bundle bytes or None if unreadable)`` of the image's bundles.

    ``signatures`` picks cosign's image signatures (predicate ``cosign/sign/v1``), else the
    attestations; a referrer that names its predicate type in an annotation is sorted by it.
    """
    found: list[tuple[str, bytes | None]] = []
    for desc, manifest in lay.referrers(digest):
        if not (manifest.artifact_type or "").startswith(SIGSTORE_BUNDLE_PREFIX):
            continue
        named = (manifest.annotations or {}).get(ANNOTATION_BUNDLE_PREDICATE_TYPE)
        if named is not None and (named == COSIGN_SIGN_PREDICATE_TYPE) != signatures:
            continue
        for layer in manifest.layers:
            if layer.media_type.startswith(SIGSTORE_BUNDLE_PREFIX):
                try:
                    found.append((desc.digest, lay.read_blob(layer.digest)))
                except OciLayoutError:
                    found.append((desc.digest, None))
    return found


def _verify_bundles(
    lay: OciLayout,
    digest: str,
    key: PublicKey,
    errors: list[SigningError],
    *,
    signatures: bool,
    accept: Callable[[dict[str, Any]], SigningError | None],
) -> Verified | None:
    """The first bundle that verifies with ``key``, is about ``digest`` and that ``accept`` takes (None: none).

    Each refusal is added to ``errors``.
    """
    for manifest_digest, data in _bundles(lay, digest, signatures=signatures):
        try:
            if data is None:
                raise SignatureInvalid("Sigstore bundle was modified")
            doc = _statement_of(bundle_envelope(data), key, digest)
        except SigningError as err:
            errors.append(err)
            continue
        problem = accept(doc)
        if problem is not None:
            errors.append(problem)
            continue
        return Verified(FORMAT_BUNDLE, digest, manifest_digest, doc)
    return None


def _missing(lay: OciLayout, digest: str, what: str, tag: str) -> SignatureMissing:
    return SignatureMissing(f"no {what} for this image (no Sigstore bundle referrer and no {tag} in {lay.root})")


def verify_image_any(
    layout_path: str | Path, ref: str | None, pubkey: PublicKey | str | Path | bytes, *, identity: str | None = None
) -> Verified:
    """The image's signature in either format: a Sigstore bundle referrer first, else the ``.sig``.

    A bundle must verify with ``pubkey``, be cosign's image signature statement about this
    image's digest and, if ``identity`` is given, name it as a subject (cosign's own bundles
    name none, so with ``identity`` only the ``.sig`` can answer for them). Raises what
    :func:`verify_image` raises, weighing the refusals of both formats.
    """
    key = _public(pubkey)
    lay, digest = _image(layout_path, ref)
    errors: list[SigningError] = []

    def accept(doc: dict[str, Any]) -> SigningError | None:
        if doc["predicateType"] != COSIGN_SIGN_PREDICATE_TYPE:
            return PayloadInvalid(f"bundle signs a {doc['predicateType']!r} statement, not an image signature")
        if identity is not None and identity not in {s.get("name") for s in doc["subject"]}:
            return SignatureIdentityMismatch(f"signature bundle does not name {identity!r}")
        return None

    found = _verify_bundles(lay, digest, key, errors, signatures=True, accept=accept)
    if found is not None:
        return found
    sig_desc = lay.find(signature_tag(digest))
    if sig_desc is None:
        if not errors:
            raise _missing(lay, digest, "signature", signature_tag(digest))
        _raise_best(errors, "signature")
    try:
        payload = verify_image(layout_path, digest, key, identity=identity)
    except SigningError as err:
        if not errors:
            raise
        # a .sig without a simple-signing layer adds nothing to what the bundles said
        _raise_best(errors if isinstance(err, SignatureMissing) else [*errors, err], "signature")
    return Verified(FORMAT_SIG, digest, sig_desc.digest, payload)


def verify_attestation(
    layout_path: str | Path,
    ref: str | None,
    pubkey: PublicKey | str | Path | bytes,
    *,
    predicate_type: str | None = None,
) -> Verified:
    """The verified in-toto statement about image ``ref`` (optionally of ``predicate_type``).

    Sigstore bundle referrers first, then the ``.att`` tag. Raises :class:`SignatureMissing`,
    :class:`SignatureInvalid`, :class:`SignatureDigestMismatch` (statement about another image),
    :class:`PayloadInvalid`.
    """
    key = _public(pubkey)
    lay, digest = _image(layout_path, ref)
    errors: list[SigningError] = []

    def accept(doc: dict[str, Any]) -> SigningError | None:
        if predicate_type is not None and doc["predicateType"] != predicate_type:
            return PayloadInvalid(f"attestation is of type {doc['predicateType']!r}")
        return None

    found = _verify_bundles(lay, digest, key, errors, signatures=False, accept=accept)
    if found is not None:
        return found
    tag = attestation_tag(digest)
    att_desc = lay.find(tag)
    if att_desc is None:
        if not errors:
            raise _missing(lay, digest, "attestation", tag)
        _raise_best(errors, "attestation")
    for layer in _layers(lay, tag, DSSE_MEDIA_TYPE, "attestation"):
        try:
            doc = _statement_of(Envelope.from_json(lay.read_blob(layer.digest)), key, digest)
        except OciLayoutError:
            errors.append(SignatureInvalid("attestation envelope was modified"))
            continue
        except SigningError as err:
            errors.append(err)
            continue
        problem = accept(doc)
        if problem is not None:
            errors.append(problem)
            continue
        return Verified(FORMAT_ATT, digest, att_desc.digest, doc)
    _raise_best(errors, "attestation")
