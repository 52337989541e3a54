"""Admin API authentication: EdDSA (Ed25519) JWTs with a ``role`` claim, checked against ACLs.

Besides the admin key, a token may be signed by the sign stage's *enrolled* event key (header
``kid`` = its key id, role :data:`SIGN_STAGE_ROLE`): the sign stage registers image keys and
reference values from any host without holding the KBS admin key, and can do nothing else. The
KBS trusts only keys the installation's admin enrolled for ``sign`` and has not revoked
(:mod:`ccpipe.pipeline.enrolment`); a key a process wrote into a keyring file itself never counts.

No anonymous admin (Trustee's default ``InsecureAllowAll`` is not offered). A token must
verify with the admin public key (``<data_dir>/keys/kbs/admin.pub``; the private key
``admin.key`` beside it, 0600, is created with it on the first embedded start), carry an
``exp`` in the future and a ``role`` whose ACL (a regex over the request path, as Trustee's
``regex_acl``) allows the endpoint. Roles: ``admin`` (everything), ``resource-writer`` (set
resources: the sign stage), ``policy-admin`` (policies and reference values).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ccpipe.crypto import jose
from ccpipe.pipeline.event_trust import trusted_keys
from ccpipe.pipeline.keyfiles import create_private_file
from ccpipe.pipeline.signing import enrolled_mode
from ccpipe.stages.attest.kbs.errors import AdminAuthFailed
from ccpipe.stages.attest.kbs.key_dir import ADMIN_PUBLIC_FILE, KEYS_DIR_ENV

ROLE_ACLS: dict[str, re.Pattern[str]] = {
    "admin": re.compile(r"^/kbs/v0/(resource/.+|attestation-policy|resource-policy|reference-value(/.+)?)$"),
    "resource-writer": re.compile(r"^/kbs/v0/resource/.+$"),
    "policy-admin": re.compile(r"^/kbs/v0/(attestation-policy|resource-policy|reference-value(/.+)?)$"),
    "sign-stage": re.compile(r"^/kbs/v0/(resource/ccpipe/.+|reference-value)$"),
}
"""Role → the admin paths it may use."""


def admin_key_paths(data_dir: Path) -> tuple[Path, Path]:
    """(private key, public key) paths of the admin key pair."""
    d = data_dir / "keys" / "kbs"
    return d / "admin.key", d / ADMIN_PUBLIC_FILE


def ensure_admin_keypair(data_dir: Path) -> Ed25519PublicKey:
    """The admin public key, creating the pair (private 0600) on first use (safe when KBS
    workers start together on a fresh data directory: they all end up with one pair).

    With ``CCPIPE_KBS_KEYS_DIR`` set, the replicas' ``admin.pub`` there (written by
    ``ccpipe kbs keys``) must exist; no pair is made.
    """
    shared = os.environ.get(KEYS_DIR_ENV)
    if shared:
        path = Path(shared) / ADMIN_PUBLIC_FILE
        try:
            return load_admin_public_key(path)
        except OSError as exc:
            raise AdminAuthFailed(f"{KEYS_DIR_ENV} is {shared}, but its {ADMIN_PUBLIC_FILE} cannot be read: "
                                  f"{exc.strerror}", hint="fill the directory with 'ccpipe kbs keys DIR'") from exc
    priv_path, pub_path = admin_key_paths(data_dir)
    if pub_path.exists():  # an operator may provision only the public half
        return load_admin_public_key(pub_path)
    created = create_private_file(priv_path, Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    # Racing workers all derive the public half from the one private key that won.
    public = load_admin_private_key(priv_path).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if created or not pub_path.exists():
        tmp = pub_path.with_name(f".{pub_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, pub_path)  # the same bytes whoever writes last
    return public


def load_admin_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key (PEM); raises :class:`AdminAuthFailed` if it is not one."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise AdminAuthFailed(f"{path} is not an Ed25519 public key")
    return key


def load_admin_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key (PEM, PKCS#8); raises :class:`AdminAuthFailed` if it is not one."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AdminAuthFailed(f"{path} is not an Ed25519 private key")
    return key


SIGN_STAGE_ROLE = "sign-stage"
"""The one role a token signed by an enrolled sign key may carry: resources and reference values."""
EnrolledSignKey = Callable[[str], Ed25519PublicKey | None]
"""``lookup(key id)`` → the in-force key the admin enrolled for the sign stage with that id, or None."""


def mint_admin_token(key: Ed25519PrivateKey, role: str, *, ttl_s: int = 300, subject: str = "ccpipe",
                     kid: str | None = None) -> str:
    """A short-lived admin JWT (EdDSA) for ``role`` (with ``kid``: by an enrolled key of that id)."""
    now = int(time.time())
    claims = {"role": role, "sub": subject, "iat": now, "exp": now + ttl_s, "jti": uuid.uuid4().hex}
    return jose.sign_eddsa_jwt(claims, key, kid=kid)


class AdminAuthenticator:
    """Checks ``Authorization: Bearer <JWT>`` of admin requests."""

    def __init__(self, public_key: Ed25519PublicKey, enrolled_sign_key: EnrolledSignKey | None = None) -> None:
        """Accept tokens signed by ``public_key``, and (``sign-stage`` role only) by the keys
        ``enrolled_sign_key`` finds for a token's ``kid``."""
        self._key = public_key
        self._enrolled = enrolled_sign_key

    def authorize(self, authorization: str | None, path: str) -> dict[str, Any]:
        """The token's claims if it may call ``path``.

        Raises :class:`AdminAuthFailed` for a missing header, a token that does not verify,
        one without a future ``exp``, or a role whose ACL does not match ``path``.
        """
        if not authorization or not authorization.startswith("Bearer "):
            raise AdminAuthFailed("admin endpoints need Authorization: Bearer <admin JWT>")
        token = authorization.removeprefix("Bearer ").strip()
        key, forced_role = self._key, None
        try:
            kid = jose.unverified_jwt_header(token).get("kid")
            if kid is not None:  # not the admin key: an enrolled sign key, or nothing
                enrolled = self._enrolled(str(kid)) if self._enrolled is not None else None
                if enrolled is None:
                    raise AdminAuthFailed(f"admin token key {str(kid)[:64]!r} is not an enrolled key of the sign stage")
                key, forced_role = enrolled, SIGN_STAGE_ROLE
            # The Ed25519 check is ccpipe.crypto.ed25519's rule, as for every other signature.
            claims = jose.verify_eddsa_jwt(token, key)
        except jose.JwtInvalid as exc:
            raise AdminAuthFailed(f"admin token does not verify: {exc}") from exc
        if forced_role is not None:
            if claims.get("role") != forced_role:
                raise AdminAuthFailed(f"a token of an enrolled sign key may only carry the role {forced_role!r}")
            # the change is attributed to the key that verified, never to a name the token chose
            claims = {**claims, "sub": f"sign key {kid}"}
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            raise AdminAuthFailed("admin token has expired or has no exp")
        role = claims.get("role")
        acl = ROLE_ACLS.get(role) if isinstance(role, str) else None
        if acl is None or not acl.match(path):
            raise AdminAuthFailed(f"role {role!r} may not use {path}")
        return claims


def enrolled_sign_keys(data_dir: Path) -> EnrolledSignKey | None:
    """The lookup of the sign stage's enrolled keys in ``data_dir``'s keyring, or None where no
    admin key is pinned (a bare data directory's keyring holds self-registered keys: never trusted here)."""
    if not enrolled_mode(data_dir):
        return None
    keys = trusted_keys(data_dir)

    def lookup(kid: str) -> Ed25519PublicKey | None:
        entry = keys.keyring.get(kid)
        if entry is None and keys.reload():  # enrolled since this KBS last read the keyring
            entry = keys.keyring.get(kid)
        if entry is None or entry.component != "sign" or entry.revoked_at is not None:
            return None
        return Ed25519PublicKey.from_public_bytes(entry.public_key)

    return lookup
