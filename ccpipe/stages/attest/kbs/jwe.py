"""The TEE's public key (JWK) and the resource JWE sent to it, byte-compatible with Trustee.

Trustee's KBS encrypts a released resource as a flattened JSON JWE with ``enc`` A256GCM and,
per the key's ``alg``, ``ECDH-ES+A256KW`` (P-256/P-521; ``epk`` in the *protected* header, key
order ``crv, kty, x, y``; Concat KDF with empty PartyU/PartyV info) or ``RSA-OAEP-256``. The
header is serialised once and that exact string is the GCM AAD. Written on ``cryptography``
(not joserfc, which places ``epk`` in the unprotected header where a CoCo guest would not find
it). :func:`decrypt_resource` is the receiving side (the enclave runner's client); the tests
check both against joserfc.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ccpipe.schemas.kbs import FlattenedJwe
from ccpipe.stages.attest.kbs.errors import TeePubkeyInvalid

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
        size = _CURVES[str(crv)][1]
        return _ec_public_key(str(crv), _field(jwk, "x", size), _field(jwk, "y", size))
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


@functools.lru_cache(maxsize=1024)
def _ec_public_key(crv: str, x: bytes, y: bytes) -> ec.EllipticCurvePublicKey:
    # Cached: a session's key is imported at /attest and again for every resource it fetches
    # (the point check is most of the cost). Failures raise, so they are never cached.
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y), _CURVES[crv][0]).public_key()
    except ValueError as exc:
        raise TeePubkeyInvalid("EC tee-pubkey is not a point on its curve") from exc


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public EC or RSA JWK.

    Raises :class:`TeePubkeyInvalid` when a required member is missing.
    """
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}.get(str(jwk.get("kty")))
    if required is None or any(not isinstance(jwk.get(k), str) for k in required):
        raise TeePubkeyInvalid("tee-pubkey lacks the members of an EC or RSA JWK")
    members = {k: jwk[k] for k in required}
    # RFC 7638 §3: members in order, no whitespace; orjson writes that (as json does) for ASCII
    # text, which every usable key's members are.
    canonical = (orjson.dumps(members) if all(v.isascii() for v in members.values())
                 else json.dumps(members, separators=(",", ":")).encode())
    return b64url(hashlib.sha256(canonical).digest())


def _concat_kdf(z: bytes, alg: str) -> bytes:
    # RFC 7518 §4.6.2: AlgorithmID = len‖alg, PartyUInfo = PartyVInfo = len 0, SuppPubInfo = 256.
    other = len(alg).to_bytes(4, "big") + alg.encode() + bytes(4) + bytes(4) + (256).to_bytes(4, "big")
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def _ec_point(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    crv = "P-256" if key.curve.name == "secp256r1" else "P-521"
    size = _CURVES[crv][1]
    nums = key.public_numbers()
    return {"crv": crv, "kty": "EC", "x": b64url(nums.x.to_bytes(size)), "y": b64url(nums.y.to_bytes(size))}


def public_jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, str]:
    """The tee-pubkey JWK of ``key`` (EC P-256/P-521 for ECDH-ES+A256KW, RSA for RSA-OAEP-256)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {**_ec_point(key.public_key()), "alg": EC_ALG}
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8)),
            "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8)), "alg": RSA_ALG}


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


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
        encrypted_key = tee_pubkey.encrypt(cek, _oaep())
        header = {"alg": RSA_ALG, "enc": "A256GCM"}
    protected = b64url(orjson.dumps(header))  # compact, in Trustee's member order
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return FlattenedJwe(
        protected=protected,
        encrypted_key=b64url(encrypted_key),
        iv=b64url(iv),
        ciphertext=b64url(sealed[:-16]),
        tag=b64url(sealed[-16:]),
    )


def decrypt_resource(jwe: dict[str, Any], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """The plaintext of a flattened JWE (as :func:`encrypt_resource` and Trustee write it) sent to ``key``.

    Only ``enc`` A256GCM with ``alg`` ECDH-ES+A256KW (``epk`` in the protected header, on the
    key's curve) or RSA-OAEP-256 matching the key. Raises ``ValueError`` naming what is wrong
    (another header, a member that is not base64url, a key or tag that does not open).
    """
    try:
        protected = str(jwe["protected"])
        header = json.loads(b64url_decode(protected))
        encrypted_key, iv = b64url_decode(str(jwe["encrypted_key"])), b64url_decode(str(jwe["iv"]))
        sealed = b64url_decode(str(jwe["ciphertext"])) + b64url_decode(str(jwe["tag"]))
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a flattened JWE: {exc!r}") from exc
    if not isinstance(header, dict) or header.get("enc") != "A256GCM":
        raise ValueError("the JWE's protected header must say enc A256GCM")
    alg = header.get("alg")
    try:
        if alg == EC_ALG and isinstance(key, ec.EllipticCurvePrivateKey):
            epk = header.get("epk")
            if not isinstance(epk, dict) or epk.get("crv") != _ec_point(key.public_key())["crv"]:
                raise ValueError("the JWE's epk is missing or on another curve than this key")
            peer = import_tee_pubkey({k: epk.get(k) for k in ("kty", "crv", "x", "y")})
            assert isinstance(peer, ec.EllipticCurvePublicKey)
            cek = aes_key_unwrap(_concat_kdf(key.exchange(ec.ECDH(), peer), EC_ALG), encrypted_key)
        elif alg == RSA_ALG and isinstance(key, rsa.RSAPrivateKey):
            cek = key.decrypt(encrypted_key, _oaep())
        else:
            raise ValueError(f"the JWE's alg {alg!r} does not fit this {type(key).__name__}")
        return AESGCM(cek).decrypt(iv, sealed, protected.encode("ascii"))
    except TeePubkeyInvalid as exc:
        raise ValueError(f"the JWE's epk is not a usable key: {exc.message}") from exc
    except (InvalidUnwrap, InvalidTag) as exc:
        raise ValueError("the JWE does not open with this key (altered, or sent to another key)") from exc
