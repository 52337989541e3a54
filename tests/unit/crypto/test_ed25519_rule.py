"""One Ed25519 rule: every verification path in ccpipe gives the same answer on crafted signatures."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ccpipe.crypto import ed25519, jose
from ccpipe.pipeline.audit.checkpoint import NoteVerifier
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.offline import ed25519_verify as offline_verify
from ccpipe.pipeline.event_signature import SIGNING_CONTEXT, key_id_for
from ccpipe.pipeline.event_trust import SignatureVerdict, verify_event_signature
from ccpipe.stages.attest.kbs.admin_auth import AdminAuthenticator
from ccpipe.stages.attest.kbs.errors import AdminAuthFailed
from ccpipe.stages.sign.keys import verify_bytes

L = 2**252 + 27742317777372353535851937790883648493
BASE_POINT = bytes([0x58]) + bytes([0x66]) * 31  # RFC 8032's B, encoded
IDENTITY = bytes([1]) + bytes(31)  # y = 1: the neutral point, of order 1
SEED = bytes(range(32))

Verifier = Callable[[bytes, bytes, bytes], bool]


def _event(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # The event trail signs SIGNING_CONTEXT + canonical bytes; the cases below sign that too.
    if not message.startswith(SIGNING_CONTEXT):
        return False
    ring = Keyring()
    ring.add("build", public_key)
    verdict = verify_event_signature(ring, key_id_for(public_key), message[len(SIGNING_CONTEXT):], signature)
    return verdict is SignatureVerdict.VALID


def _checkpoint(public_key: bytes, message: bytes, signature: bytes) -> bool:
    return NoteVerifier("log.example", public_key).verify(message, signature)


def _cosign(public_key: bytes, message: bytes, signature: bytes) -> bool:
    return verify_bytes(Ed25519PublicKey.from_public_bytes(public_key), signature, message)


def _admin(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # An EdDSA JWT whose signing input is the message: only the signature check decides.
    head, _, body = message.decode("ascii").partition(".")
    token = f"{head}.{body}.{jose.b64url(signature)}"
    try:
        AdminAuthenticator(Ed25519PublicKey.from_public_bytes(public_key)).authorize(
            f"Bearer {token}", "/kbs/v0/resource/a/b/c")
    except AdminAuthFailed:
        return False
    return True


PATHS: dict[str, Verifier] = {
    "ccpipe.crypto.ed25519": ed25519.verify,
    "audit offline (stdlib)": offline_verify,
    "audit events": _event,
    "audit checkpoints": _checkpoint,
    "cosign keys": _cosign,
    "kbs admin tokens": _admin,
}


def _jwt_signing_input() -> bytes:
    # Also a fine note text and cosign payload: every path but the event trail signs this.
    claims = jose.b64url(f'{{"role":"admin","exp":{int(time.time()) + 300}}}'.encode())
    header = jose.b64url(b'{"alg":"EdDSA","typ":"JWT"}')
    return f"{header}.{claims}".encode()


def _cases(msg: bytes) -> dict[str, tuple[bytes, bytes, bytes, bool]]:
    """name → (public key, message, signature, the rule's verdict), crafted over ``msg``."""
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    public = key.public_key().public_bytes_raw()
    sig = key.sign(msg)
    flipped = sig[:10] + bytes([sig[10] ^ 0x01]) + sig[11:]
    s_plus_l = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    return {
        "valid": (public, msg, sig, True),
        "flipped bit": (public, msg, flipped, False),
        "other message": (public, msg + b"x", sig, False),
        "short signature": (public, msg, sig[:63], False),
        "long signature": (public, msg, sig + b"\0", False),
        "non-canonical S (S + L)": (public, msg, s_plus_l, False),
        # With the neutral point as key, [S]B = R + [k]A holds for R = B, S = 1 and any message:
        # OpenSSL accepts this forgery; the rule refuses small-order keys.
        "small-order key": (IDENTITY, msg, BASE_POINT + (1).to_bytes(32, "little"), False),
    }


CASES = list(_cases(b""))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_applies_the_one_rule(path: str, case: str) -> None:
    msg = SIGNING_CONTEXT + b'{"id":"e1"}' if path == "audit events" else _jwt_signing_input()
    public, message, sig, verdict = _cases(msg)[case]
    assert ed25519.verify(public, message, sig) is verdict
    assert PATHS[path](public, message, sig) is verdict


def test_openssl_alone_would_accept_the_small_order_forgery() -> None:
    # Why the rule is libsodium's: the same forgery passes cryptography's own check.
    _, msg, sig, _ = _cases(b"any message")["small-order key"]
    Ed25519PublicKey.from_public_bytes(IDENTITY).verify(sig, msg)  # does not raise


def test_wrong_key_length_is_invalid_not_an_error() -> None:
    _, msg, sig, _ = _cases(b"m")["valid"]
    assert ed25519.verify(b"\0" * 31, msg, sig) is False
    assert offline_verify(b"\0" * 31, msg, sig) is False
