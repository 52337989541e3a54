"""JWE JSON serialization (RFC 7516) as ocicrypt's ``jwe`` key wrapper writes and reads it.

Written with ``cryptography`` only, so the accepted algorithms are exactly these:

* key management: ``RSA-OAEP`` (SHA-1, what go-jose picks for RSA keys), ``RSA-OAEP-256``,
  ``ECDH-ES+A128KW`` / ``+A192KW`` / ``+A256KW`` (Concat KDF with SHA-256, then AES key wrap);
* content: ``A128GCM`` / ``A192GCM`` / ``A256GCM`` and ``A128CBC-HS256`` / ``A192CBC-HS384`` /
  ``A256CBC-HS512``.

We write ``A256GCM`` with ``RSA-OAEP`` or ``ECDH-ES+A256KW``; one recipient gives the flattened
form with ``alg`` (and ``epk``) in the protected header, as go-jose does; several recipients give
the general form with per-recipient headers. ``zip`` and ``crit`` are refused.

Imports nothing of the project but ``ccpipe.stages.sign.errors``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ccpipe.stages.sign.errors import EncryptionMetadataInvalid, RecipientInvalid, UnsupportedCipher

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_NAMES = {type(c).__name__: n for n, c in _CURVES.items()}
_KW_BITS = {"ECDH-ES+A128KW": 128, "ECDH-ES+A192KW": 192, "ECDH-ES+A256KW": 256}
_GCM_BITS = {"A128GCM": 128, "A192GCM": 192, "A256GCM": 256}
_CBC_HS = {
    "A128CBC-HS256": (32, hashlib.sha256),
    "A192CBC-HS384": (48, hashlib.sha384),
    "A256CBC-HS512": (64, hashlib.sha512),
}


def b64u(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(value: Any, what: str) -> bytes:
    """Decode unpadded base64url; raises :class:`EncryptionMetadataInvalid`."""
    if not isinstance(value, str):
        raise EncryptionMetadataInvalid(f"JWE {what} is not a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EncryptionMetadataInvalid(f"JWE {what} is not base64url") from exc


def _otherinfo(alg: str, apu: bytes, apv: bytes, bits: int) -> bytes:
    def part(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    return part(alg.encode()) + part(apu) + part(apv) + struct.pack(">I", bits)


def _ecdh_kek(priv: ec.EllipticCurvePrivateKey, pub: ec.EllipticCurvePublicKey, header: dict[str, Any]) -> bytes:
    alg = header["alg"]
    bits = _KW_BITS[alg]
    apu = b64u_decode(header["apu"], "apu") if "apu" in header else b""
    apv = b64u_decode(header["apv"], "apv") if "apv" in header else b""
    shared = priv.exchange(ec.ECDH(), pub)
    return ConcatKDFHash(hashes.SHA256(), bits // 8, _otherinfo(alg, apu, apv, bits)).derive(shared)


def _jwk(pub: ec.EllipticCurvePublicKey) -> dict[str, str]:
    size = (pub.curve.key_size + 7) // 8
    nums = pub.public_numbers()
    return {
        "kty": "EC",
        "crv": _CURVE_NAMES[type(pub.curve).__name__],
        "x": b64u(nums.x.to_bytes(size, "big")),
        "y": b64u(nums.y.to_bytes(size, "big")),
    }


def _jwk_public(jwk: Any) -> ec.EllipticCurvePublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") not in _CURVES:
        raise EncryptionMetadataInvalid("JWE epk is not an EC P-256/384/521 JWK")
    x = int.from_bytes(b64u_decode(jwk.get("x"), "epk.x"), "big")
    y = int.from_bytes(b64u_decode(jwk.get("y"), "epk.y"), "big")
    try:  # public_key() checks that the point is on the curve (invalid-curve attacks)
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[jwk["crv"]]).public_key()
    except ValueError as exc:
        raise EncryptionMetadataInvalid("JWE epk is not a point on its curve") from exc


def check_recipient_key(pub: Any) -> PublicKey:
    """Return ``pub`` if it can be a JWE recipient; raises :class:`RecipientInvalid`."""
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < 2048:
            raise RecipientInvalid(f"RSA recipient key has {pub.key_size} bits; at least 2048 are needed")
        return pub
    if isinstance(pub, ec.EllipticCurvePublicKey) and type(pub.curve).__name__ in _CURVE_NAMES:
        return pub
    raise RecipientInvalid(f"{type(pub).__name__} cannot be a JWE recipient")


def _wrap_for(pub: PublicKey, cek: bytes) -> tuple[dict[str, Any], bytes]:
    if isinstance(pub, rsa.RSAPublicKey):
        oaep = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        return {"alg": "RSA-OAEP"}, pub.encrypt(cek, oaep)
    epk = ec.generate_private_key(pub.curve)
    header: dict[str, Any] = {"alg": "ECDH-ES+A256KW", "epk": _jwk(epk.public_key())}
    return header, aes_key_wrap(_ecdh_kek(epk, pub, header), cek)


def encrypt(plaintext: bytes, recipients: Sequence[PublicKey]) -> bytes:
    """A JWE (JSON serialization, ``A256GCM``) of ``plaintext`` for every key in ``recipients``."""
    if not recipients:
        raise RecipientInvalid("a JWE needs at least one recipient")
    cek = secrets.token_bytes(32)
    wrapped = [_wrap_for(check_recipient_key(pub), cek) for pub in recipients]
    protected_header: dict[str, Any] = {"enc": "A256GCM"}
    if len(wrapped) == 1:
        protected_header = {**wrapped[0][0], **protected_header}
    protected = b64u(json.dumps(protected_header, separators=(",", ":")).encode())
    iv = secrets.token_bytes(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    out: dict[str, Any] = {"protected": protected}
    if len(wrapped) == 1:
        out["encrypted_key"] = b64u(wrapped[0][1])
    else:
        out["recipients"] = [{"header": h, "encrypted_key": b64u(k)} for h, k in wrapped]
    out.update(iv=b64u(iv), ciphertext=b64u(sealed[:-16]), tag=b64u(sealed[-16:]))
    return json.dumps(out, separators=(",", ":")).encode()


def _unwrap_cek(priv: PrivateKey, header: dict[str, Any], encrypted_key: bytes) -> bytes | None:
    alg = header.get("alg")
    try:
        if isinstance(priv, rsa.RSAPrivateKey) and alg in ("RSA-OAEP", "RSA-OAEP-256"):
            h: hashes.HashAlgorithm = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
            return priv.decrypt(encrypted_key, asym_padding.OAEP(asym_padding.MGF1(h), h, None))
        if isinstance(priv, ec.EllipticCurvePrivateKey) and alg in _KW_BITS:
            epk = _jwk_public(header.get("epk"))
            if epk.curve.name != priv.curve.name:
                return None
            return aes_key_unwrap(_ecdh_kek(priv, epk, header), encrypted_key)
    except (ValueError, InvalidUnwrap):
        return None  # not this recipient's key
    return None


def _decrypt_content(enc: str, cek: bytes, iv: bytes, ct: bytes, tag: bytes, aad: bytes) -> bytes | None:
    if enc in _GCM_BITS:
        if len(cek) * 8 != _GCM_BITS[enc]:
            return None
        try:
            return AESGCM(cek).decrypt(iv, ct + tag, aad)
        except (InvalidTag, ValueError):
            return None
    keylen, hfn = _CBC_HS[enc]
    if len(cek) != keylen:
        return None
    mac_key, enc_key = cek[: keylen // 2], cek[keylen // 2 :]
    mac = hmac.new(mac_key, aad + iv + ct + struct.pack(">Q", len(aad) * 8), hfn).digest()[: keylen // 2]
    if not hmac.compare_digest(mac, tag):
        return None
    try:
        dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(dec.update(ct) + dec.finalize()) + unpadder.finalize()
    except ValueError:
        return None


def decrypt(data: bytes, priv: PrivateKey) -> bytes | None:
    """The plaintext of a JWE (flattened or general JSON form) if ``priv`` is one of its recipients.

    Returns None when the key is not a recipient; raises :class:`EncryptionMetadataInvalid` for a
    malformed JWE and :class:`UnsupportedCipher` for ``zip``, ``crit`` or an unknown ``enc``.
    """
    try:
        jwe = json.loads(data)
        protected_b64 = jwe["protected"]
        protected = json.loads(b64u_decode(protected_b64, "protected"))
    except (ValueError, KeyError, TypeError) as exc:
        raise EncryptionMetadataInvalid("JWE is not JSON with a protected header") from exc
    if not isinstance(jwe, dict) or not isinstance(protected, dict) or not isinstance(protected_b64, str):
        raise EncryptionMetadataInvalid("JWE header is not a JSON object")
    if not isinstance(jwe.get("unprotected", {}), dict) or not isinstance(jwe.get("recipients", []), list):
        raise EncryptionMetadataInvalid("JWE unprotected header or recipients have the wrong type")
    shared = {**jwe.get("unprotected", {}), **protected}
    if "zip" in shared or "crit" in shared:
        raise UnsupportedCipher("JWE with 'zip' or 'crit' headers is refused")
    enc = shared.get("enc")
    if enc not in _GCM_BITS and enc not in _CBC_HS:
        raise UnsupportedCipher(f"JWE content encryption {enc!r} is not supported")
    recipients = jwe.get("recipients") or [{"header": jwe.get("header", {}), "encrypted_key": jwe.get("encrypted_key")}]
    iv = b64u_decode(jwe.get("iv"), "iv")
    ct = b64u_decode(jwe.get("ciphertext"), "ciphertext")
    tag = b64u_decode(jwe.get("tag"), "tag")
    aad = protected_b64.encode() + (b"." + jwe["aad"].encode() if isinstance(jwe.get("aad"), str) else b"")
    for rec in recipients:
        if not isinstance(rec, dict) or not isinstance(rec.get("header", {}), dict):
            raise EncryptionMetadataInvalid("JWE recipient is not a JSON object")
        header = {**shared, **rec.get("header", {})}
        cek = _unwrap_cek(priv, header, b64u_decode(rec.get("encrypted_key"), "encrypted_key"))
        if cek is None:
            continue
        plain = _decrypt_content(enc, cek, iv, ct, tag, aad)
        if plain is not None:
            return plain
    return None
