"""The TEE's public key (JWK) and the resource JWE sent to it, byte-compatible with Trustee.

Trustee's KBS encrypts a released resource as a flattened JSON JWE with ``enc`` A256GCM and,
per the key's ``alg``, ``ECDH-ES+A256KW`` (P-256/P-521; ``epk`` in the *protected* header, key
order ``crv, kty, x, y``; Concat KDF with empty PartyU/PartyV info) or ``RSA-OAEP-256``. The
header is serialised once and that exact string is the GCM AAD. Written on ``cryptography``
(not joserfc, which places ``epk`` in the unprotected header where a CoCo guest would not find
it); the client decrypts with joserfc, so each side checks the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from schemas.kbs import FlattenedJwe
from stages.attest.kbs.errors import TeePubkeyInvalid

TeePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {"P-256": (ec.SECP256R1(), 32), "P-521": (ec.SECP521R1(), 66)}
EC_ALG = "ECDH-ES+A256KW"
RSA_ALG = "RSA-OAEP-256"


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url`; raises ``ValueError`` on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from exc


def _field(jwk: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise TeePubkeyInvalid(f"tee-pubkey has no string member {name!r}")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise TeePubkeyInvalid(f"tee-pubkey member {name!r} is not base64url") from exc
    if size is not None and len(raw) != size:
        raise TeePubkeyInvalid(f"tee-pubkey member {name!r} is {len(raw)} bytes, expected {size}")
    return raw


def import_tee_pubkey(jwk: dict[str, Any]) -> TeePublicKey:
    """The public key of a tee-pubkey JWK.

    Accepts ``kty`` EC on P-256/P-521 with ``alg`` absent or ECDH-ES+A256KW, and ``kty`` RSA
    (≥ 2048 bits) with ``alg`` absent or RSA-OAEP-256. Raises :class:`TeePubkeyInvalid` for
    anything else (including a point not on the curve).
    """
    kty, alg = jwk.get("kty"), jwk.get("alg")
    if kty == "EC":
        crv = jwk.get("crv")
        if crv not in _CURVES or alg not in (None, EC_ALG):
            raise TeePubkeyInvalid(f"EC tee-pubkey must be P-256/P-521 with alg {EC_ALG}, got {crv!r}/{alg!r}")
        curve, size = _CURVES[str(crv)]
        x, y = _field(jwk, "x", size), _field(jwk, "y", size)
        try:
            return ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y), curve).public_key()
        except ValueError as exc:
            raise TeePubkeyInvalid("EC tee-pubkey is not a point on its curve") from exc
    if kty == "RSA":
        if alg not in (None, RSA_ALG):
            raise TeePubkeyInvalid(f"RSA tee-pubkey must use alg {RSA_ALG}, got {alg!r}")
        n, e = int.from_bytes(_field(jwk, "n")), int.from_bytes(_field(jwk, "e"))
        if n.bit_length() < 2048 or e < 3 or e % 2 == 0:
            raise TeePubkeyInvalid("RSA tee-pubkey must be at least 2048 bits with an odd exponent")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise TeePubkeyInvalid("RSA tee-pubkey is not a valid key") from exc
    raise TeePubkeyInvalid(f"tee-pubkey kty must be EC or RSA, got {kty!r}")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public EC or RSA JWK.

    Raises :class:`TeePubkeyInvalid` when a required member is missing.
    """
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}.get(str(jwk.get("kty")))
    if required is None or any(not isinstance(jwk.get(k), str) for k in required):
        raise TeePubkeyInvalid("tee-pubkey lacks the members of an EC or RSA JWK")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _concat_kdf(z: bytes, alg: str) -> bytes:
    # RFC 7518 §4.6.2: AlgorithmID = len‖alg, PartyUInfo = PartyVInfo = len 0, SuppPubInfo = 256.
    other = len(alg).to_bytes(4, "big") + alg.encode() + bytes(4) + bytes(4) + (256).to_bytes(4, "big")
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def _ec_point(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    crv = "P-256" if key.curve.name == "secp256r1" else "P-521"
    size = _CURVES[crv][1]
    nums = key.public_numbers()
    return {"crv": crv, "kty": "EC", "x": b64url(nums.x.to_bytes(size)), "y": b64url(nums.y.to_bytes(size))}


def encrypt_resource(plaintext: bytes, tee_pubkey: TeePublicKey) -> FlattenedJwe:
    """``plaintext`` as Trustee's flattened JWE to ``tee_pubkey`` (fresh CEK and IV every call)."""
    cek = AESGCM.generate_key(bit_length=256)
    header: dict[str, Any]
    if isinstance(tee_pubkey, ec.EllipticCurvePublicKey):
        eph = ec.generate_private_key(tee_pubkey.curve)
        kek = _concat_kdf(eph.exchange(ec.ECDH(), tee_pubkey), EC_ALG)
        encrypted_key = aes_key_wrap(kek, cek)
        header = {"alg": EC_ALG, "enc": "A256GCM", "epk": _ec_point(eph.public_key())}
    else:
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        encrypted_key = tee_pubkey.encrypt(cek, oaep)
        header = {"alg": RSA_ALG, "enc": "A256GCM"}
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return FlattenedJwe(
        protected=protected,
        encrypted_key=b64url(encrypted_key),
        iv=b64url(iv),
        ciphertext=b64url(sealed[:-16]),
        tag=b64url(sealed[-16:]),
    )
