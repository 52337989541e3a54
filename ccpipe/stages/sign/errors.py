"""Errors of the sign/encrypt stage, with stable dotted codes.

Two families sit under :class:`SignStageError`: :class:`EncryptionError` (ocicrypt layer
encryption and decryption, key wrapping) and :class:`SigningError` (signing keys, cosign
signatures, DSSE envelopes, verification). An OCI layout that cannot be read or written raises
``ccpipe.oci.errors.OciLayoutError`` (codes ``oci.*``), from the layout module all stages
share. Every class here is permanent (none is a ``TransientError``): a retry would see the
same bytes.

Imports nothing of the project but ``ccpipe.schemas.errors``.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError


class SignStageError(CcpipeError):
    """Base of every error raised by ``ccpipe.stages.sign``."""

    code = "sign.error"


# --- encryption -------------------------------------------------------------------------------


class EncryptionError(SignStageError):
    """Base of layer encryption and decryption failures."""

    code = "sign.encrypt"


class UnsupportedLayer(EncryptionError):
    """A layer's media type cannot be encrypted (or is already encrypted)."""

    code = "sign.encrypt.mediatype"
    default_hint = "only OCI layer media types can be encrypted; convert the image to OCI first"


class RecipientInvalid(EncryptionError):
    """A recipient (public key, KBS key, resource URI) cannot be used."""

    code = "sign.encrypt.recipient"
    default_hint = "use an RSA (>= 2048 bits) or EC P-256/384/521 public key, or a 32-byte KBS key"


class DecryptionError(EncryptionError):
    """Base of failures while decrypting an encrypted image."""

    code = "sign.decrypt"


class NoDecryptionKey(DecryptionError):
    """None of the given keys unwraps the layer's key."""

    code = "sign.decrypt.nokey"
    default_hint = "pass the private key (or KBS key) of one of the image's recipients"


class EncryptionMetadataInvalid(DecryptionError):
    """The layer's encryption annotations are missing or malformed."""

    code = "sign.decrypt.metadata"
    default_hint = "the image was not encrypted by an ocicrypt-compatible tool, or its manifest was altered"


class UnsupportedCipher(DecryptionError):
    """The layer uses a cipher or key-wrap algorithm this implementation refuses."""

    code = "sign.decrypt.cipher"
    default_hint = "only AES_256_CTR_HMAC_SHA256 layers are supported"


class HmacMismatch(DecryptionError):
    """The layer ciphertext's HMAC does not match the one recorded at encryption time."""

    code = "sign.decrypt.hmac"
    default_hint = "the encrypted layer was tampered with or damaged; do not use it, fetch it again"


class PlaintextDigestMismatch(DecryptionError):
    """The decrypted layer does not hash to the digest recorded in its private options."""

    code = "sign.decrypt.digest"
    default_hint = "the encrypted layer or its wrapped key was altered; do not use it"


# --- signing ----------------------------------------------------------------------------------


class SigningError(SignStageError):
    """Base of signing-key, signature and attestation failures."""

    code = "sign.sign"


class KeyInvalid(SigningError):
    """A signing or verification key cannot be read or is of an unsupported kind."""

    code = "sign.key.invalid"
    default_hint = "use a key made by `ccpipe keys generate` or `cosign generate-key-pair` (ECDSA P-256)"


class KeyPasswordInvalid(SigningError):
    """The password does not open the encrypted private key."""

    code = "sign.key.password"
    default_hint = "check the password (COSIGN_PASSWORD) for this key"


class KeyExists(SigningError):
    """A key file would be overwritten."""

    code = "sign.key.exists"
    default_hint = "choose another prefix or remove the old key files first"


class SignatureMissing(SigningError):
    """The image has no signature (or attestation) to verify."""

    code = "sign.verify.missing"
    default_hint = "sign the image first (`ccpipe sign --key NAME.key IMAGE`)"


class SignatureInvalid(SigningError):
    """No signature verifies with the given key (wrong key or modified payload)."""

    code = "sign.verify.signature"
    default_hint = "the image was signed by another key or its signature payload was modified"


class SignatureDigestMismatch(SigningError):
    """A valid signature covers another image digest than the one being verified."""

    code = "sign.verify.digest"
    default_hint = "the signature belongs to another image; do not trust this one"


class SignatureIdentityMismatch(SigningError):
    """A valid signature names another image identity (docker-reference)."""

    code = "sign.verify.identity"
    default_hint = "the image was signed for another repository"


class PayloadInvalid(SigningError):
    """A signed payload (simple-signing JSON, in-toto statement, DSSE envelope) is malformed."""

    code = "sign.verify.payload"
    default_hint = "the signature was not made by a cosign-compatible tool"
