"""Sign/encrypt stage: ocicrypt layer encryption, keys in the KBS, cosign signatures, DSSE.

Core entry points (pure: paths and bytes in, dataclasses out; no NATS)::

    from ccpipe.stages.sign import ImageKey, KbsRecipient, encrypt_image, load_private_key, sign_image

    key = ImageKey.generate("kbs:///default/image-key/hello")   # caller registers key.kek in the KBS
    enc = encrypt_image("build/oci:hello", "signed/oci:hello", [KbsRecipient(key)])
    sig = sign_image("signed/oci", "hello", load_private_key("cosign.key", "pw"), identity="reg/hello")
"""

from ccpipe.stages.sign.cosign import (
    AttachResult,
    KeySigner,
    Signer,
    Verified,
    attest_image,
    sign_image,
    verify_attestation,
    verify_image,
    verify_image_any,
)
from ccpipe.stages.sign.dsse import Envelope, pae, sign_envelope, verify_envelope
from ccpipe.stages.sign.encrypt import ImageResult, LayerChange, decrypt_image, encrypt_image, encrypt_image_for_kbs
from ccpipe.stages.sign.keys import generate_keys, load_private_key, load_public_key
from ccpipe.stages.sign.recipients import (
    ImageKey,
    JweRecipient,
    KbsRecipient,
    kbs_resource_uri,
    load_decryption_key,
    parse_recipient,
)

__all__ = [
    "AttachResult",
    "Envelope",
    "ImageKey",
    "ImageResult",
    "JweRecipient",
    "KbsRecipient",
    "KeySigner",
    "LayerChange",
    "Signer",
    "Verified",
    "attest_image",
    "decrypt_image",
    "encrypt_image",
    "encrypt_image_for_kbs",
    "generate_keys",
    "kbs_resource_uri",
    "load_decryption_key",
    "load_private_key",
    "load_public_key",
    "pae",
    "parse_recipient",
    "sign_envelope",
    "sign_image",
    "verify_attestation",
    "verify_envelope",
    "verify_image",
    "verify_image_any",
]
