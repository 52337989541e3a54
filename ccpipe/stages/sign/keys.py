"""Signing keys in cosign's formats, and the raw sign/verify operations on bytes.

cosign's encrypted private key is a PEM block (``ENCRYPTED SIGSTORE PRIVATE KEY``, or the older
``ENCRYPTED COSIGN PRIVATE KEY``; both are read) whose body is the JSON of go-securesystemslib's
``encrypted`` package::

    {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":b64(32 bytes)},
     "cipher":{"name":"nacl/secretbox","nonce":b64(24 bytes)},
     "ciphertext":b64(secretbox(PKCS#8 DER))}

The box key is ``scrypt(password, salt, N, r, p, 32)``. Only the (N, r, p) triples cosign and
containers/image accept are read (which also bounds the work a hostile key file can cause); we
write N=32768, which every version accepts. Plain PEM keys (PKCS#8, SEC1) are read too.

ECDSA signatures are ASN.1 DER over SHA-256, as cosign makes them; verification also accepts the
raw ``r || s`` form that the DSSE test vectors use.

Imports nothing of the project but ``ccpipe.stages.sign.errors``.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ccpipe.crypto.ed25519 import verify as verify_ed25519
from ccpipe.stages.sign.errors import KeyExists, KeyInvalid, KeyPasswordInvalid, SigningError

PEM_SIGSTORE = "ENCRYPTED SIGSTORE PRIVATE KEY"
PEM_COSIGN = "ENCRYPTED COSIGN PRIVATE KEY"
_ACCEPTED_SCRYPT = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}
_WRITE_N = 32768

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _password(password: str | bytes | None) -> bytes:
    if password is None:
        return b""
    return password.encode() if isinstance(password, str) else password


def _pem(pem_type: str, body: bytes) -> bytes:
    b = base64.b64encode(body).decode()
    lines = "\n".join(b[i : i + 64] for i in range(0, len(b), 64))
    return f"-----BEGIN {pem_type}-----\n{lines}\n-----END {pem_type}-----\n".encode()


def encrypt_private_key(key: PrivateKey, password: str | bytes, pem_type: str = PEM_SIGSTORE) -> bytes:
    """``key`` as cosign's encrypted PEM, sealed with ``password`` (may be empty, as in cosign)."""
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    box_key = Scrypt(salt=salt, length=32, n=_WRITE_N, r=8, p=1).derive(_password(password))
    sealed = nacl.secret.SecretBox(box_key).encrypt(pkcs8, nonce).ciphertext  # tag || ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": _WRITE_N, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return _pem(pem_type, json.dumps(doc, separators=(",", ":")).encode())


def _pem_body(pem: bytes) -> tuple[str, bytes]:
    text = pem.decode("ascii", "replace")
    start = text.find("-----BEGIN ")
    if start < 0:
        raise KeyInvalid("not a PEM key")
    head_end = text.find("-----", start + 11)
    pem_type = text[start + 11 : head_end]
    end = text.find(f"-----END {pem_type}-----", head_end)
    if end < 0:
        raise KeyInvalid(f"PEM block {pem_type!r} has no END line")
    try:
        return pem_type, base64.b64decode("".join(text[head_end + 5 : end].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyInvalid(f"PEM block {pem_type!r} is not base64") from exc


def _decrypt_cosign(body: bytes, password: bytes) -> bytes:
    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        sealed = base64.b64decode(doc["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeyInvalid("encrypted cosign key is not the expected JSON") from exc
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise KeyInvalid(f"unsupported key encryption {kdf.get('name')}/{cipher.get('name')}")
    if params not in _ACCEPTED_SCRYPT:
        raise KeyInvalid(f"unsupported scrypt parameters N={params[0]} r={params[1]} p={params[2]}")
    box_key = Scrypt(salt=salt, length=32, n=params[0], r=params[1], p=params[2]).derive(password)
    try:
        return nacl.secret.SecretBox(box_key).decrypt(sealed, nonce)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise KeyPasswordInvalid("the password does not open this private key") from exc


def _check_private(key: Any) -> PrivateKey:
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        return key
    raise KeyInvalid(f"{type(key).__name__} keys cannot sign")


def load_private_key(source: str | os.PathLike[str] | bytes, password: str | bytes | None = None) -> PrivateKey:
    """A signing key from a path or PEM bytes: cosign's encrypted format or a plain PEM.

    Raises :class:`KeyInvalid` or :class:`KeyPasswordInvalid`.
    """
    pem = _read(source)
    pem_type, body = _pem_body(pem)
    if pem_type in (PEM_SIGSTORE, PEM_COSIGN):
        der = _decrypt_cosign(body, _password(password))
        try:
            return _check_private(serialization.load_der_private_key(der, None))
        except ValueError as exc:
            raise KeyInvalid("decrypted cosign key is not PKCS#8") from exc
    try:
        pw = _password(password) if pem_type == "ENCRYPTED PRIVATE KEY" else None
        return _check_private(serialization.load_pem_private_key(pem, pw))
    except (ValueError, TypeError) as exc:
        if pem_type == "ENCRYPTED PRIVATE KEY":
            raise KeyPasswordInvalid("the password does not open this private key") from exc
        raise KeyInvalid(f"cannot read {pem_type} private key") from exc


def load_public_key(source: str | os.PathLike[str] | bytes) -> PublicKey:
    """A verification key from a path or PEM bytes (``PUBLIC KEY``); raises :class:`KeyInvalid`."""
    pem = _read(source)
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyInvalid("not a PEM public key") from exc
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise KeyInvalid(f"{type(key).__name__} keys are not supported for verification")
    return key


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM (``PUBLIC KEY``) of a key, as cosign writes ``NAME.pub``."""
    pub = (
        key.public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey))
        else key
    )
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keys(prefix: str | os.PathLike[str], password: str | bytes | None) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (ECDSA P-256, cosign's encrypted format) and ``PREFIX.pub``.

    Like ``cosign generate-key-pair``. ``password=None`` writes an *unencrypted* PKCS#8 PEM
    instead (for tests and HSM-less labs only). The key file is created with mode 0600 and
    never overwritten (:class:`KeyExists`).
    """
    base = Path(prefix)
    key_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise KeyExists(f"{p} already exists")
    key = ec.generate_private_key(ec.SECP256R1())
    if password is None:
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        data = encrypt_private_key(key, password)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        pub_path.write_bytes(public_key_pem(key))
    except OSError as exc:
        raise SigningError(f"cannot write {exc.filename or key_path}: {exc.strerror}",
                           hint="choose a prefix in an existing directory you may write to",
                           code="sign.key.write") from exc
    return key_path, pub_path


def load_or_create_keys(prefix: str | os.PathLike[str], password: str | bytes | None) -> tuple[PrivateKey, bytes]:
    """The key pair at ``PREFIX.key`` / ``PREFIX.pub``, generated on first use; (private key, public PEM).

    Several processes may call this at once: a lock file beside the keys makes one of them
    generate and the others read. Raises :class:`KeyInvalid` / :class:`KeyPasswordInvalid` for
    an existing key that cannot be read with ``password``.
    """
    base = Path(prefix)
    base.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (base.parent / f".{base.name}.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key_path = base.with_name(base.name + ".key")
        if not key_path.exists():
            generate_keys(base, password)
        key = load_private_key(key_path, password)
    return key, public_key_pem(key)


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """A signature over ``data``: ECDSA/SHA-256 (DER), RSA PKCS#1 v1.5/SHA-256, or Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def verify_bytes(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` verifies with ``key`` (never raises for a bad signature)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        candidates = [signature]
        size = (key.curve.key_size + 7) // 8
        if len(signature) == 2 * size:  # raw r||s, as in the DSSE vectors
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            candidates.append(encode_dss_signature(r, s))
        for candidate in candidates:
            try:
                key.verify(candidate, data, ec.ECDSA(hashes.SHA256()))
                return True
            except (InvalidSignature, ValueError):
                continue
        return False
    if isinstance(key, ed25519.Ed25519PublicKey):
        return verify_ed25519(key.public_bytes_raw(), data, signature)
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _read(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise KeyInvalid(f"cannot read key file {source}: {exc.strerror}") from exc
