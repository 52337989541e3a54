"""JOSE for all of ccpipe: base64url, JWKs and thumbprints, JWE and JWT, on ``joserfc``.

Who uses what:

* the KBS (:mod:`ccpipe.stages.attest.kbs`) imports TEE public keys (:func:`import_public_jwk`),
  names them by RFC 7638 thumbprint (:func:`jwk_thumbprint`), sends resources as flattened JWEs
  (:func:`encrypt_flattened`), signs attestation tokens (:func:`sign_es256_jwt`) and verifies
  them and admin tokens (:func:`verify_jwt`, :func:`verify_eddsa_jwt`);
* its client (the node agent) opens those JWEs (:func:`decrypt`) with the key of :func:`public_jwk`;
* the attestation service signs and checks EAR tokens (:func:`sign_jwt`, :func:`verify_jwt`);
* the sign stage wraps ocicrypt's private options for its ``jwe`` recipients
  (:func:`encrypt_flattened` for one, :func:`encrypt_general` for several) and unwraps them
  (:func:`decrypt`).

``joserfc`` does the work except in the measured or wire-bound places below, each checked against
``joserfc`` by ``tests/unit/crypto/test_jose_fast_paths.py``:

* :func:`encrypt_flattened` writes the flattened JWE Trustee's KBS writes, byte for byte in its
  layout: ``alg``, ``enc`` and ``epk`` (members ``crv, kty, x, y``) all in the *protected*
  header, whose exact string is the GCM AAD. ``joserfc`` puts ``epk`` in the per-recipient
  header of a JSON JWE, where a CoCo guest does not look, and orders ``epk``'s members otherwise;
  it is also about 1.4× slower on the KBS handshake, where this runs once per resource;
* :func:`encrypt_general_ec` writes a general JSON JWE to EC keys for sealed artifacts: the git
  hook's ``ccpipe submit`` seals the pushed source on every push, and importing ``joserfc``
  (which loads ``cryptography.x509``) costs more CPU than that whole submit should; ``joserfc``
  is therefore imported lazily, by the functions that use it;
* :func:`sign_es256_jwt` writes the KBS's attestation token with ``orjson`` and one ECDSA call;
  ``joserfc``'s encoder spends more on claim conversion than on the signature.

Decryption uses the transmitted ``protected`` string as the AAD (RFC 7516 §5.2 step 14). A
flattened JWE to an EC key with every header protected (the KBS's answer to every guest) is
opened with the ``cryptography`` primitives :func:`encrypt_flattened` uses, after the same
header and ``epk`` checks (``joserfc`` spent three quarters of a guest's JWE time in key
objects); a flattened JWE to an RSA key goes through ``joserfc``'s compact decryption, which
keeps that string verbatim; other JSON forms go through ``joserfc``'s JSON decryption.

Ed25519 signatures are checked by :mod:`ccpipe.crypto.ed25519` (also inside EdDSA JWTs).
Imports nothing of the project but :mod:`ccpipe.crypto.ed25519`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ccpipe.crypto import ed25519
from ccpipe.schemas.json_input import load_json

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, OKPKey, RSAKey
    from joserfc.jws import JWSRegistry

# joserfc is imported by the functions that use it, not here: with the cryptography.x509 it
# loads it is about a tenth of a second of CPU, and ``ccpipe submit`` (run by the git hook on
# every push) needs only encrypt_general_ec from this module.

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

EC_ALG = "ECDH-ES+A256KW"
"""The key management we write for EC recipients (Concat KDF with SHA-256, then AES key wrap)."""
CONTENT_ENC = "A256GCM"
"""The content encryption we write."""
RSA_OAEP = "RSA-OAEP"
"""RSA-OAEP with SHA-1: what go-jose (ocicrypt) picks for RSA recipients."""
RSA_OAEP_256 = "RSA-OAEP-256"
"""RSA-OAEP with SHA-256: what Trustee's KBS uses for RSA TEE keys."""

CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
"""The JWK curve names of the EC keys we accept (RFC 7518 §6.2.1.1)."""
_CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}
_CURVE_BY_OPENSSL_NAME = {curve.name: name for name, curve in CURVES.items()}
MIN_RSA_BITS = 2048

READ_ALGORITHMS = (
    RSA_OAEP, RSA_OAEP_256, "ECDH-ES+A128KW", "ECDH-ES+A192KW", EC_ALG,
    "A128GCM", "A192GCM", CONTENT_ENC, "A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512",
)
"""Every key management and content encryption :func:`decrypt` may be allowed to accept."""


class JoseInvalid(ValueError):
    """A JOSE object or key that cannot be used; the message says what is wrong."""


class JwkInvalid(JoseInvalid):
    """A JWK (or key object) that is not an accepted key."""


class JweMalformed(JoseInvalid):
    """A JWE whose members or headers are not what RFC 7516 requires."""


class JweUnsupported(JoseInvalid):
    """A JWE using ``zip``, ``crit`` or an algorithm the caller does not allow."""


class JweNotForKey(JoseInvalid):
    """A well-formed JWE that does not open with the given key (sent to another key, or altered)."""


class JwtInvalid(JoseInvalid):
    """A JWT whose signature, algorithm or form does not verify."""


# --- base64url ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url` (padding optional); raises ``ValueError`` on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from exc


# --- JWK ---------------------------------------------------------------------------------------


def _member(jwk: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwkInvalid(f"the JWK has no string member {name!r}")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise JwkInvalid(f"the JWK member {name!r} is not base64url") from exc
    if size is not None and len(raw) != size:
        raise JwkInvalid(f"the JWK member {name!r} is {len(raw)} bytes, expected {size}")
    return raw


@functools.lru_cache(maxsize=128)
def _ec_public_key(crv: str, x: bytes, y: bytes) -> ec.EllipticCurvePublicKey:
    # Cached: the KBS imports a session's key at /attest and again for every resource it sends
    # (the on-curve check is most of the cost). Failures raise, so they are never cached. Every
    # session brings a new key used within seconds: room for the sessions in flight, not for a
    # long run's history (1,024 native keys were megabytes held for good).
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y), CURVES[crv]).public_key()
    except ValueError as exc:  # not on the curve: refusing it stops invalid-curve attacks
        raise JwkInvalid(f"the EC JWK is not a point on its curve ({crv})") from exc


def import_public_jwk(
    jwk: Mapping[str, Any],
    *,
    curves: Collection[str] = tuple(CURVES),
    algs: Mapping[str, str] | None = None,
) -> PublicKey:
    """The public key of an EC or RSA JWK we may encrypt to.

    ``kty`` EC on one of ``curves``, or RSA of at least 2048 bits with an odd exponent. With
    ``algs`` (``kty`` → the one ``alg`` allowed), an ``alg`` member must be absent or that one.
    Raises :class:`JwkInvalid` for anything else, including a point not on its curve.
    """
    kty, alg = jwk.get("kty"), jwk.get("alg")
    wanted = (algs or {}).get(str(kty))
    if kty == "EC":
        crv = jwk.get("crv")
        if crv not in curves or crv not in CURVES or (algs is not None and alg not in (None, wanted)):
            raise JwkInvalid(f"an EC JWK must be {'/'.join(curves)} with alg {wanted}, got {crv!r}/{alg!r}")
        size = _CURVE_BYTES[str(crv)]
        return _ec_public_key(str(crv), _member(jwk, "x", size), _member(jwk, "y", size))
    if kty == "RSA":
        if algs is not None and alg not in (None, wanted):
            raise JwkInvalid(f"an RSA JWK must use alg {wanted}, got {alg!r}")
        n, e = int.from_bytes(_member(jwk, "n")), int.from_bytes(_member(jwk, "e"))
        if n.bit_length() < MIN_RSA_BITS or e < 3 or e % 2 == 0:
            raise JwkInvalid(f"an RSA JWK must be at least {MIN_RSA_BITS} bits with an odd exponent")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise JwkInvalid("the RSA JWK is not a valid key") from exc
    raise JwkInvalid(f"the JWK's kty must be EC or RSA, got {kty!r}")


def check_recipient_key(key: object) -> PublicKey:
    """``key`` if it can be a JWE recipient (RSA ≥ 2048 bits, EC P-256/384/521); raises :class:`JwkInvalid`."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise JwkInvalid(f"RSA recipient key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_BY_OPENSSL_NAME:
        return key
    raise JwkInvalid(f"{type(key).__name__} cannot be a JWE recipient")


_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public EC or RSA JWK.

    Equal to ``joserfc.jwk.thumbprint`` (tested) at half its cost: the KBS takes one per
    handshake. Raises :class:`JwkInvalid` when a required member is missing.
    """
    required = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if required is None or any(not isinstance(jwk.get(k), str) for k in required):
        raise JwkInvalid("the JWK lacks the members of an EC or RSA public key")
    members = {k: jwk[k] for k in required}
    # RFC 7638 §3: required members in lexicographic order, no whitespace. orjson writes that,
    # as json does, for ASCII text, which every usable key's members are.
    canonical = (orjson.dumps(members) if all(v.isascii() for v in members.values())
                 else json.dumps(members, separators=(",", ":")).encode())
    return b64url(hashlib.sha256(canonical).digest())


def _ec_members(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    # Trustee's serde order: crv, kty, x, y.
    crv = _CURVE_BY_OPENSSL_NAME[key.curve.name]
    size = _CURVE_BYTES[crv]
    nums = key.public_numbers()
    return {"crv": crv, "kty": "EC", "x": b64url(nums.x.to_bytes(size)), "y": b64url(nums.y.to_bytes(size))}


def public_jwk(key: PrivateKey, *, rsa_alg: str = RSA_OAEP_256) -> dict[str, str]:
    """The public JWK of ``key`` with the ``alg`` a sender should use (``ECDH-ES+A256KW`` or ``rsa_alg``)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {**_ec_members(key.public_key()), "alg": EC_ALG}
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8)),
            "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8)), "alg": rsa_alg}


# --- JWE: writing ------------------------------------------------------------------------------


def _concat_kdf(z: bytes, alg: str) -> bytes:
    # RFC 7518 §4.6.2 with empty PartyUInfo/PartyVInfo (as Trustee and go-jose write) and a
    # 256-bit key: AlgorithmID = len ‖ alg, PartyUInfo = PartyVInfo = len 0, SuppPubInfo = 256.
    other = len(alg).to_bytes(4, "big") + alg.encode() + bytes(4) + bytes(4) + (256).to_bytes(4, "big")
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def _oaep(alg: str) -> padding.OAEP:
    digest: hashes.HashAlgorithm = hashes.SHA1() if alg == RSA_OAEP else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def encrypt_flattened(plaintext: bytes, recipient: PublicKey, *, rsa_alg: str = RSA_OAEP_256) -> dict[str, str]:
    """``plaintext`` as a flattened JSON JWE (``A256GCM``) to ``recipient``, in Trustee's layout.

    EC keys get ``ECDH-ES+A256KW``, RSA keys ``rsa_alg`` (``RSA-OAEP-256`` as the KBS sends, or
    ``RSA-OAEP`` as go-jose writes for ocicrypt). A fresh CEK and IV on every call. The result's
    members are ``protected, encrypted_key, iv, ciphertext, tag`` (no ``aad``, no ``header``).
    """
    if rsa_alg not in (RSA_OAEP, RSA_OAEP_256):
        raise JweUnsupported(f"RSA key management {rsa_alg!r} is not written")
    cek = AESGCM.generate_key(bit_length=256)
    header: dict[str, Any]
    if isinstance(recipient, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(recipient.curve)
        encrypted_key = aes_key_wrap(_concat_kdf(ephemeral.exchange(ec.ECDH(), recipient), EC_ALG), cek)
        header = {"alg": EC_ALG, "enc": CONTENT_ENC, "epk": _ec_members(ephemeral.public_key())}
    else:
        encrypted_key = recipient.encrypt(cek, _oaep(rsa_alg))
        header = {"alg": rsa_alg, "enc": CONTENT_ENC}
    protected = b64url(orjson.dumps(header))  # compact, in Trustee's member order
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {"protected": protected, "encrypted_key": b64url(encrypted_key), "iv": b64url(iv),
            "ciphertext": b64url(sealed[:-16]), "tag": b64url(sealed[-16:])}


def encrypt_general_ec(plaintext: bytes, recipients: Sequence[ec.EllipticCurvePublicKey]) -> dict[str, Any]:
    """``plaintext`` as a general JSON JWE (``A256GCM``) to EC ``recipients`` (``ECDH-ES+A256KW``),
    written without ``joserfc``, in the layout :func:`encrypt_general` writes.

    ``enc`` is the protected header (the GCM AAD is its base64url string); each recipient's
    ``alg`` and ``epk`` are in its own header, with its wrapped content key. Decrypts with
    :func:`decrypt` and with ``joserfc`` (tested). Sealed artifacts use it: ``ccpipe submit``
    seals the pushed source on every push, and ``joserfc``'s import costs more than the push.
    """
    if not recipients:
        raise JoseInvalid("a JWE needs at least one recipient")
    cek = AESGCM.generate_key(bit_length=256)
    entries = []
    for recipient in recipients:
        if not isinstance(recipient, ec.EllipticCurvePublicKey) or recipient.curve.name not in _CURVE_BY_OPENSSL_NAME:
            raise JwkInvalid(f"{type(recipient).__name__} is not an EC key on a JOSE curve")
        ephemeral = ec.generate_private_key(recipient.curve)
        wrapped = aes_key_wrap(_concat_kdf(ephemeral.exchange(ec.ECDH(), recipient), EC_ALG), cek)
        entries.append({"header": {"alg": EC_ALG, "epk": _ec_members(ephemeral.public_key())},
                        "encrypted_key": b64url(wrapped)})
    protected = b64url(b'{"enc":"A256GCM"}')
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {"protected": protected, "recipients": entries, "iv": b64url(iv),
            "ciphertext": b64url(sealed[:-16]), "tag": b64url(sealed[-16:])}


def _joserfc_key(key: PublicKey | PrivateKey) -> ECKey | RSAKey:
    from joserfc.jwk import ECKey, RSAKey

    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return ECKey.import_key(key)
    return RSAKey.import_key(key)


def encrypt_general(plaintext: bytes, recipients: Sequence[PublicKey], *, rsa_alg: str = RSA_OAEP) -> dict[str, Any]:
    """``plaintext`` as a general JSON JWE (``A256GCM``) with one entry per recipient (``joserfc``).

    ``enc`` is the protected header; each recipient's ``alg`` (``ECDH-ES+A256KW`` or
    ``rsa_alg``) and ``epk`` are in its own header.
    """
    from joserfc import jwe
    from joserfc.jwe import GeneralJSONEncryption

    if not recipients:
        raise JoseInvalid("a JWE needs at least one recipient")
    obj = GeneralJSONEncryption({"enc": CONTENT_ENC}, plaintext)
    for key in recipients:
        alg = EC_ALG if isinstance(key, ec.EllipticCurvePublicKey) else rsa_alg
        obj.add_recipient({"alg": alg}, _joserfc_key(key))
    return dict(jwe.encrypt_json(obj, None, algorithms=[EC_ALG, rsa_alg, CONTENT_ENC]))


# --- JWE: reading ------------------------------------------------------------------------------


def _json_member(doc: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = doc.get(name, default)
    if not isinstance(value, kind):
        what = {"str": "a string", "dict": "an object", "list": "an array"}[kind.__name__]
        raise JweMalformed(f"the JWE member {name!r} is missing or not {what}")
    return value


def _protected_header(doc: Mapping[str, Any]) -> dict[str, Any]:
    protected = _json_member(doc, "protected", str)
    try:
        header = load_json(b64url_decode(protected))
    except ValueError as exc:
        raise JweMalformed("the JWE's protected header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise JweMalformed("the JWE's protected header is not a JSON object")
    return header


def _check_recipient(header: Mapping[str, Any], key: PrivateKey, algorithms: Collection[str]) -> None:
    alg = header.get("alg")
    if alg not in algorithms:  # another recipient's entry may still be for us
        raise JweNotForKey(f"the JWE's key management {alg!r} is not accepted here")
    fits = (isinstance(key, ec.EllipticCurvePrivateKey) and str(alg).startswith("ECDH-ES")) or (
        isinstance(key, rsa.RSAPrivateKey) and str(alg).startswith("RSA-OAEP"))
    if not fits:
        raise JweNotForKey(f"the JWE's alg {alg!r} does not fit this {type(key).__name__}")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        epk = header.get("epk")
        if not isinstance(epk, dict) or epk.get("crv") != _CURVE_BY_OPENSSL_NAME.get(key.curve.name):
            raise JweNotForKey("the JWE's epk is missing or on another curve than this key")
        try:  # checks the point is on the curve before any key agreement (invalid-curve attacks)
            import_public_jwk({k: epk.get(k) for k in ("kty", "crv", "x", "y")})
        except JwkInvalid as exc:
            raise JweMalformed(f"the JWE's epk is not a usable key: {exc}") from exc


def decrypt(doc: Mapping[str, Any], key: PrivateKey, *, algorithms: Collection[str] = READ_ALGORITHMS) -> bytes:
    """The plaintext of a JSON JWE (flattened or general) that ``key`` is a recipient of.

    ``algorithms`` lists the key management and content encryption names accepted (a subset of
    :data:`READ_ALGORITHMS`). Raises :class:`JweMalformed` for a malformed object,
    :class:`JweUnsupported` for ``zip``, ``crit`` or an algorithm not allowed, and
    :class:`JweNotForKey` when no recipient entry opens with ``key`` or the tag does not match.
    """
    if not isinstance(doc, Mapping):
        raise JweMalformed("the JWE is not a JSON object")
    protected = _protected_header(doc)
    unprotected = _json_member(doc, "unprotected", dict, {})
    entries = _json_member(doc, "recipients", list, []) or [doc]
    for name in ("iv", "ciphertext", "tag"):
        _json_member(doc, name, str)
    shared = {**unprotected, **protected}
    if "zip" in shared or "crit" in shared:
        raise JweUnsupported("a JWE with 'zip' or 'crit' headers is refused")
    if shared.get("enc") not in algorithms or not str(shared.get("enc")).startswith("A"):
        raise JweUnsupported(f"JWE content encryption {shared.get('enc')!r} is not accepted here")
    headers = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise JweMalformed("a JWE recipient is not a JSON object")
        _json_member(entry, "encrypted_key", str)
        headers.append({**shared, **_json_member(entry, "header", dict, {})})
    problems: list[JoseInvalid] = []
    for header in headers:
        try:
            _check_recipient(header, key, algorithms)
        except JweNotForKey as exc:
            problems.append(exc)
    if len(problems) == len(headers):
        raise problems[0]
    if isinstance(key, ec.EllipticCurvePrivateKey) and not any(
            m in doc for m in ("recipients", "header", "unprotected", "aad")):
        return _decrypt_flattened_ec(doc, protected, key)
    return _joserfc_decrypt(doc, key, algorithms)


def _decrypt_flattened_ec(doc: Mapping[str, Any], header: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    """The plaintext of a flattened JWE whose every header is protected, to an EC key: the KBS's
    resource answer, opened by every guest on every launch (``joserfc`` costs four times the
    cryptography here). :func:`decrypt` has checked ``alg``, ``enc`` and the ``epk`` point already."""
    if header.get("alg") != EC_ALG or header.get("enc") != CONTENT_ENC:
        raise JweUnsupported(f"JWE {header.get('alg')!r}/{header.get('enc')!r} is not opened here")
    epk = header["epk"]
    sender = import_public_jwk({k: epk.get(k) for k in ("kty", "crv", "x", "y")})
    assert isinstance(sender, ec.EllipticCurvePublicKey)  # an EC 'kty' makes an EC key (import_public_jwk)
    try:
        iv, tag = b64url_decode(doc["iv"]), b64url_decode(doc["tag"])
        wrapped, ciphertext = b64url_decode(doc["encrypted_key"]), b64url_decode(doc["ciphertext"])
    except ValueError as exc:
        raise JweMalformed(f"a JWE member is not base64url: {exc}") from exc
    if len(iv) != 12 or len(tag) != 16:  # A256GCM: a 96-bit IV and a 128-bit tag (RFC 7518 §5.3)
        raise JweMalformed("the JWE's iv or tag has the wrong length for A256GCM")
    try:
        cek = aes_key_unwrap(_concat_kdf(key.exchange(ec.ECDH(), sender), EC_ALG), wrapped)
        if len(cek) != 32:
            raise JweNotForKey("the JWE's content key is not 256 bits")
        # the AAD is the transmitted protected string, verbatim (RFC 7516 §5.2 step 14)
        return AESGCM(cek).decrypt(iv, ciphertext + tag, str(doc["protected"]).encode("ascii"))
    except (InvalidUnwrap, InvalidTag, ValueError) as exc:
        raise JweNotForKey("the JWE does not open with this key (altered, or sent to another key)") from exc


def _joserfc_decrypt(doc: Mapping[str, Any], key: PrivateKey, algorithms: Collection[str]) -> bytes:
    from joserfc import jwe
    from joserfc.errors import JoseError as _JoserfcError
    from joserfc.jwe import JWERegistry

    registry = JWERegistry(algorithms=list(algorithms), verify_all_recipients=False, strict_check_header=False)
    try:
        if not any(m in doc for m in ("recipients", "header", "unprotected", "aad")):
            # Everything is in the protected header: the compact form carries exactly these
            # members, and joserfc's compact decryption keeps the transmitted header as AAD.
            compact = ".".join(str(doc[m]) for m in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))
            return bytes(jwe.decrypt_compact(compact, _joserfc_key(key), registry=registry).plaintext or b"")
        return bytes(jwe.decrypt_json(cast(Any, dict(doc)), _joserfc_key(key), registry=registry).plaintext or b"")
    except (_JoserfcError, ValueError, TypeError, KeyError) as exc:
        raise JweNotForKey("the JWE does not open with this key (altered, or sent to another key)") from exc


# --- JWT ---------------------------------------------------------------------------------------

_ES256_HEADER = b64url(b'{"alg":"ES256","typ":"JWT"}')


def sign_es256_jwt(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """A compact ES256 JWT (header ``{"alg":"ES256","typ":"JWT"}``) of ``claims`` signed by a P-256 ``key``.

    Written with ``orjson`` and one ECDSA call (the KBS signs one per handshake); what it
    writes is what ``joserfc`` writes for the same header and verifies (tested).
    """
    try:
        payload = orjson.dumps(claims)
    except TypeError:  # e.g. an integer beyond 64 bits: the standard encoder copes
        payload = json.dumps(claims, separators=(",", ":")).encode()
    signing_input = f"{_ES256_HEADER}.{b64url(payload)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def sign_jwt(header: Mapping[str, Any], claims: Mapping[str, Any], key: ECKey | OKPKey | RSAKey) -> str:
    """A compact JWT of ``claims`` with ``header`` (its ``alg`` picks the algorithm), by ``joserfc``."""
    from joserfc import jwt

    return jwt.encode(dict(header), dict(claims), key, algorithms=[str(header["alg"])])


def verify_jwt(
    token: str, key: ECKey | OKPKey | RSAKey, algorithms: Collection[str], *, registry: JWSRegistry | None = None
) -> dict[str, Any]:
    """The claims of a compact JWT whose signature verifies with ``key`` under one of ``algorithms``.

    Checks the signature and algorithm only; the caller checks the claims it relies on
    (``exp``, ``iss``...). Raises :class:`JwtInvalid` naming the failure.
    """
    from joserfc import jwt
    from joserfc.errors import JoseError as _JoserfcError

    try:
        decoded = (jwt.decode(token, key, registry=registry) if registry is not None
                   else jwt.decode(token, key, algorithms=list(algorithms)))
    except (_JoserfcError, ValueError, TypeError) as exc:
        raise JwtInvalid(f"the token does not verify: {exc}") from exc
    return dict(decoded.claims)


@functools.cache
def _eddsa_registry_class() -> type[JWSRegistry]:
    """A JWS registry whose only algorithm is EdDSA checked by :mod:`ccpipe.crypto.ed25519`
    (made on first use, with joserfc's import)."""
    from joserfc.jwa import JWSAlgModel
    from joserfc.jws import JWSRegistry

    class _LibsodiumEdDSA(JWSAlgModel):
        """EdDSA (Ed25519 only) whose verification follows :mod:`ccpipe.crypto.ed25519`'s rule."""

        name = "EdDSA"
        description = "Ed25519 signatures checked by ccpipe.crypto.ed25519"
        key_type = "OKP"

        def sign(self, msg: bytes, key: Any) -> bytes:
            op_key = key.get_op_key("sign")
            if not isinstance(op_key, Ed25519PrivateKey):
                raise JwtInvalid("EdDSA here needs an Ed25519 private key")
            return op_key.sign(msg)

        def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:
            op_key = key.get_op_key("verify")
            if not isinstance(op_key, Ed25519PublicKey):
                return False
            return ed25519.verify(op_key.public_bytes_raw(), msg, sig)

    class _EdDSARegistry(JWSRegistry):
        # Its own algorithm table, so joserfc's global one (and its OpenSSL EdDSA) is untouched.
        algorithms: ClassVar[dict[str, JWSAlgModel]] = {"EdDSA": _LibsodiumEdDSA()}  # type: ignore[misc]
        recommended: ClassVar[list[str]] = ["EdDSA"]  # type: ignore[misc]

    return _EdDSARegistry


def sign_eddsa_jwt(claims: Mapping[str, Any], key: Ed25519PrivateKey, *, kid: str | None = None) -> str:
    """A compact EdDSA JWT (header ``{"alg":"EdDSA","typ":"JWT"}``, plus ``kid`` when given) of
    ``claims`` by an Ed25519 ``key``."""
    from joserfc import jwt
    from joserfc.errors import SecurityWarning
    from joserfc.jwk import OKPKey

    header = {"alg": "EdDSA", "typ": "JWT", **({"kid": kid} if kid is not None else {})}
    with warnings.catch_warnings():
        # joserfc flags the "EdDSA" name (RFC 9864 prefers "Ed25519"); Trustee's admin tokens use it.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, dict(claims), OKPKey.import_key(key), algorithms=["EdDSA"])


def unverified_jwt_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS, *not* verified (to pick the key to verify with).

    Raises :class:`JwtInvalid` when it is not base64url JSON of an object.
    """
    try:
        header = load_json(b64url_decode(token.split(".", 1)[0]))
    except (ValueError, JoseInvalid) as exc:
        raise JwtInvalid("the token's header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise JwtInvalid("the token's header is not a JSON object")
    return header


def verify_eddsa_jwt(token: str, key: Ed25519PublicKey) -> dict[str, Any]:
    """The claims of an EdDSA JWT signed by ``key``; the signature is checked by :func:`ccpipe.crypto.ed25519.verify`.

    Raises :class:`JwtInvalid`.
    """
    from joserfc.jwk import OKPKey

    return verify_jwt(token, OKPKey.import_key(key), ["EdDSA"], registry=_eddsa_registry_class()(algorithms=["EdDSA"]))

