"""Sigstore bundles signed with a plain key: cosign 3's default signature and attestation format.

A bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) wraps one DSSE envelope and says
how to find its key: ``verificationMaterial.publicKey.hint`` is ``base64(sha256(SPKI DER))``.
No transparency-log entry is written or required (cosign's ``--tlog-upload=false`` /
``--insecure-ignore-tlog``), which is also why sigstore-python cannot read these bundles and
ccpipe checks them itself (see ``/work/shared/reference/signing-and-encryption-formats.md``
§1.2):

* an image signature is an in-toto statement about the image manifest digest with predicate
  type ``https://sigstore.dev/cosign/sign/v1`` and predicate ``{}``;
* an attestation is the same DSSE envelope as the ``.att`` layer, wrapped in a bundle.

Where they are stored (OCI 1.1 referrers) is :mod:`ccpipe.stages.sign.cosign`'s business.
Imports nothing of the project but ``ccpipe.oci.cosign_names`` and the sign stage's own modules.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization

from ccpipe.oci.cosign_names import COSIGN_SIGN_PREDICATE_TYPE, SIGSTORE_BUNDLE_MEDIA_TYPE, SIGSTORE_BUNDLE_PREFIX
from ccpipe.stages.sign.dsse import Envelope, statement
from ccpipe.stages.sign.errors import PayloadInvalid
from ccpipe.stages.sign.keys import PublicKey


def key_hint(key: PublicKey) -> str:
    """The bundle's ``publicKey.hint`` for ``key``: base64 of the SHA-256 of its SPKI DER, as cosign writes it."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def signature_statement(identity: str, image_digest: str) -> bytes:
    """The statement cosign 3 signs for an image: ``identity`` (the repository) at ``image_digest``."""
    return statement([(identity, image_digest)], COSIGN_SIGN_PREDICATE_TYPE, {})


def bundle_json(envelope: Envelope, hint: str) -> bytes:
    """A key-signed bundle of ``envelope`` (protobuf JSON field names, as cosign writes them)."""
    envelope_doc = json.loads(envelope.to_json())
    doc = {
        "mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}},
        "dsseEnvelope": envelope_doc,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def bundle_envelope(data: bytes) -> Envelope:
    """The DSSE envelope a bundle carries; raises :class:`PayloadInvalid` for anything else.

    A bundle over a message signature (no envelope) is not an image signature cosign writes,
    so it is refused too. The key hint is not trusted: the caller's key decides.
    """
    try:
        doc: Any = json.loads(data)
    except ValueError as exc:
        raise PayloadInvalid("Sigstore bundle is not JSON") from exc
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(SIGSTORE_BUNDLE_PREFIX):
        raise PayloadInvalid("not a Sigstore bundle (mediaType)")
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise PayloadInvalid("Sigstore bundle holds no DSSE envelope")
    return Envelope.from_json(envelope)
