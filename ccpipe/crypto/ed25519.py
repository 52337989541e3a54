"""Ed25519 signature verification: the one rule every ccpipe path applies.

The rule is RFC 8032 verification as libsodium's ``crypto_sign_verify_detached`` implements it
(libsodium ≥ 1.0.16, built without ``ED25519_COMPAT``):

* the public key is 32 bytes and the signature 64 bytes (anything else is simply invalid);
* ``S`` is canonical (``S < L``), so a signature cannot be made malleable by adding ``L``;
* the public key is a canonical encoding (``y < p``) of a point that is *not* of small order,
  and ``R`` is not the encoding of a small-order point: a small-order key would let one forged
  signature verify for every message;
* the equation is cofactorless — ``[S]B − [k]A`` must re-encode to exactly the bytes of ``R``.

OpenSSL (pyca ``cryptography``) applies the same equation but accepts small-order keys and
``R``; checking through libsodium everywhere means the event trail, checkpoints, the KBS admin
API and cosign keys give one answer for one crafted signature. The standard-library verifier
bundled with audit exports (:mod:`ccpipe.pipeline.audit.offline`) repeats this rule by hand,
and ``tests/unit/crypto/test_ed25519_rule.py`` holds all of them to it.
"""

from __future__ import annotations

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Never raises for bad input: a key or signature of the wrong length is just not valid.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        # crypto_sign_open is crypto_sign_verify_detached on signature ‖ message (PyNaCl
        # exposes no detached form); the copy is cheap next to the scalar multiplications.
        crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except CryptoError:
        return False
    return True


__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "verify"]
