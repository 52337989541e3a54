"""Enrolment: the installation's admin vouches for each component's event-signing key.

Trust without a shared disk (issue 16). An administrator makes the installation's admin key once
(``ccpipe admin init``) and pins its public half on every host (``CCPIPE_ADMIN_KEY``). A
component prints its public key where it runs (``ccpipe admin public-key COMPONENT``); the admin
enrols it (``ccpipe admin enrol COMPONENT KEY``): an :class:`EnrolmentRecord` signed with the
admin key is stored in the ``CCPIPE_ENROLMENTS`` KV bucket, which only the admin identity may
write. Every reader rebuilds the trusted keyring from those records (:func:`enrolled_keys`),
keeping only records that verify under the pinned admin key: a record planted by anyone else,
or a key a component wrote into a keyring file itself, counts for nothing. A revocation is a
new record for the same key with ``revoked_at`` set; events the key signs from then on are
refused (:data:`ccpipe.pipeline.event_trust.SignatureVerdict.REVOKED_KEY`).

Pure: record format, signatures and the admin key files. The NATS side is
:mod:`ccpipe.pipeline.enrolment_bus`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ccpipe.crypto import ed25519, jose
from ccpipe.evidence.enrolled_roots import decode_public_roots
from ccpipe.pipeline.event_signature import check_component, key_id_for, read_ed25519_private_key
from ccpipe.pipeline.keyfiles import KeyMaterialError, write_private
from ccpipe.pipeline.signing import RegisteredKey, admin_public_key_path
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.errors import ConfigurationError, InvalidInput

RECORD_VERSION = 1
ROOTS_FROM = ("build", "runner")
"""The components whose evidence the verifiers check, and so whose enrolment may carry emulated roots."""
ENROLMENT_CONTEXT = b"ccpipe-enrolment-v1\n"
"""Prefixed to a record's canonical bytes before the admin signs them: an admin signature over an
enrolment can never be taken for an event signature, or the reverse."""


class EnrolmentError(InvalidInput):
    """An enrolment record that is malformed or not signed by the pinned admin key."""

    code = "enrolment.invalid"
    default_hint = "only records the installation's admin signed ('ccpipe admin enrol') are trusted"


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    """The admin's statement: ``public_key`` signs ``component``'s events (until ``revoked_at``)."""

    component: str
    public_key: bytes
    enrolled_at: datetime
    admin_key_id: str
    revoked_at: datetime | None = None
    sealing_key: dict[str, str] | None = None
    """The component's sealing key (public JWK), for a component that receives sealed artifacts
    (:data:`ccpipe.pipeline.artifacts.SEALED_FOR`)."""
    emulated_roots: dict[str, str] | None = None
    """A build runner's or runner node's public emulated TEE roots (relative path → base64, as
    :func:`ccpipe.evidence.enrolled_roots.export_public_roots` makes them), for the verifiers on
    other hosts; only for :data:`ROOTS_FROM` components."""

    @property
    def key_id(self) -> str:
        """The enrolled key's id (what its events' ``Ccpipe-Signature`` header names)."""
        return key_id_for(self.public_key)

    @property
    def kv_key(self) -> str:
        """Its key in the ``CCPIPE_ENROLMENTS`` bucket: one entry per enrolled key."""
        return f"{self.component}.{self.key_id}"

    def to_json(self) -> dict[str, Any]:
        """The signed document (RFC 8785 canonical bytes of this are what the admin signs)."""
        doc: dict[str, Any] = {"version": RECORD_VERSION, "component": self.component, "key_id": self.key_id,
                               "public_key": base64.b64encode(self.public_key).decode(),
                               "enrolled_at": self.enrolled_at.isoformat(), "admin_key_id": self.admin_key_id}
        if self.revoked_at is not None:
            doc["revoked_at"] = self.revoked_at.isoformat()
        if self.sealing_key is not None:
            doc["sealing_key"] = dict(self.sealing_key)
        if self.emulated_roots is not None:
            doc["emulated_roots"] = dict(self.emulated_roots)
        return doc

    def revoked(self, at: datetime | None = None) -> EnrolmentRecord:
        """The same enrolment, revoked from ``at`` (now by default)."""
        return EnrolmentRecord(self.component, self.public_key, self.enrolled_at, self.admin_key_id,
                               at or datetime.now(UTC), self.sealing_key, self.emulated_roots)


def new_record(component: str, public_key: bytes, admin_public: bytes,
               sealing_key: dict[str, str] | None = None,
               emulated_roots: dict[str, str] | None = None) -> EnrolmentRecord:
    """An enrolment of ``public_key`` (and ``sealing_key``, a public JWK, and ``emulated_roots``) for
    ``component``, made now; raises :class:`EnrolmentError` for a bad name, key or roots."""
    check_component(component)
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise EnrolmentError(f"the public key for {component!r} is not a 32-byte Ed25519 key") from exc
    if sealing_key is not None:
        _check_sealing_key(sealing_key, component)
    if emulated_roots is not None:
        _check_roots(emulated_roots, component)
    return EnrolmentRecord(component, bytes(public_key), datetime.now(UTC), key_id_for(admin_public),
                           sealing_key=sealing_key, emulated_roots=emulated_roots)


def _check_roots(files: Any, component: str) -> dict[str, str]:
    if component not in ROOTS_FROM:
        raise EnrolmentError(f"{component!r} produces no TEE evidence: its enrolment carries no emulated roots")
    try:
        decode_public_roots(files, f"the emulated roots of {component!r}")
    except InvalidInput as exc:
        raise EnrolmentError(exc.message) from exc
    return {str(k): str(v) for k, v in files.items()}


def _check_sealing_key(jwk: Any, component: str) -> dict[str, str]:
    try:
        if not isinstance(jwk, dict):
            raise jose.JwkInvalid("not a JSON object")
        jose.import_public_jwk(jwk, curves=("P-256",))
    except jose.JoseInvalid as exc:
        raise EnrolmentError(f"the sealing key for {component!r} is not a P-256 public JWK: {exc}") from exc
    return {str(k): str(v) for k, v in jwk.items()}


def sign_record(record: EnrolmentRecord, admin: Ed25519PrivateKey) -> bytes:
    """The stored form of ``record``: ``{"record": …, "signature": <base64 Ed25519>}``."""
    signature = admin.sign(ENROLMENT_CONTEXT + canonical_json(record.to_json()))
    return json.dumps({"record": record.to_json(), "signature": base64.b64encode(signature).decode()},
                      sort_keys=True).encode()


def open_record(blob: bytes, admin_public: bytes) -> EnrolmentRecord:
    """The record in ``blob`` if the admin key ``admin_public`` signed it; raises :class:`EnrolmentError`."""
    try:
        doc = json.loads(blob)
        body, signature = doc["record"], base64.b64decode(doc["signature"], validate=True)
        if not isinstance(body, dict) or body.get("version") != RECORD_VERSION:
            raise EnrolmentError("an enrolment record is not a version 1 record")
        if not ed25519.verify(admin_public, ENROLMENT_CONTEXT + canonical_json(body), signature):
            raise EnrolmentError(f"the enrolment record of {body.get('component')!r} key {body.get('key_id')} "
                                 "is not signed by the pinned admin key")
        public_key = base64.b64decode(body["public_key"], validate=True)
        record = EnrolmentRecord(
            str(body["component"]), public_key, datetime.fromisoformat(body["enrolled_at"]),
            str(body["admin_key_id"]),
            datetime.fromisoformat(body["revoked_at"]) if body.get("revoked_at") else None,
            _check_sealing_key(body["sealing_key"], str(body["component"])) if "sealing_key" in body else None,
            _check_roots(body["emulated_roots"], str(body["component"])) if "emulated_roots" in body else None)
        check_component(record.component)
        if record.key_id != body.get("key_id") or len(public_key) != 32:
            raise EnrolmentError(f"the enrolment record of {record.component!r} names another key than it holds")
    except EnrolmentError:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error, KeyMaterialError) as exc:
        raise EnrolmentError(f"an enrolment record is malformed: {exc}") from exc
    return record


@dataclass(frozen=True)
class EnrolledKeys:
    """The keys the records vouch for, and the records that were ignored (with why)."""

    keys: list[RegisteredKey]
    ignored: list[str]
    sealing: dict[str, list[dict[str, str]]]
    """Component → the sealing keys (public JWKs) of its in-force enrolments."""
    emulated_roots: dict[str, dict[str, str]]
    """``<component>-<key id>`` → the emulated roots its in-force enrolment carries."""


def open_records(blobs: Iterable[bytes], admin_public: bytes) -> tuple[list[EnrolmentRecord], list[str]]:
    """The records among ``blobs`` that ``admin_public`` signed, and why each other one was ignored."""
    records: list[EnrolmentRecord] = []
    ignored: list[str] = []
    for blob in blobs:
        try:
            records.append(open_record(blob, admin_public))
        except EnrolmentError as exc:
            ignored.append(exc.message)
    return records, ignored


def enrolled_keys(blobs: Iterable[bytes], admin_public: bytes) -> EnrolledKeys:
    """The trusted component keys: each record that verifies under ``admin_public`` (never raises).

    A key enrolled for two components is refused for both (a key id belongs to one component).
    """
    records, ignored = open_records(blobs, admin_public)
    by_id: dict[str, EnrolmentRecord] = {}
    for record in records:
        earlier = by_id.get(record.key_id)
        if earlier is not None and earlier.component != record.component:
            ignored.append(f"key {record.key_id} is enrolled for both {earlier.component!r} and "
                           f"{record.component!r}: trusted for neither")
            by_id[record.key_id] = earlier.revoked(earlier.enrolled_at)
            continue
        by_id[record.key_id] = record
    keys = [RegisteredKey(r.component, r.public_key, r.key_id, r.revoked_at) for r in by_id.values()]
    sealing: dict[str, list[dict[str, str]]] = {}
    for r in sorted(by_id.values(), key=lambda r: r.enrolled_at):
        if r.sealing_key is not None and r.revoked_at is None:
            sealing.setdefault(r.component, []).append(r.sealing_key)
    roots = {f"{r.component}-{r.key_id}": r.emulated_roots for r in by_id.values()
             if r.emulated_roots is not None and r.revoked_at is None}
    return EnrolledKeys(sorted(keys, key=lambda k: (k.component, k.key_id)), ignored, sealing, roots)


# --- the admin key ----------------------------------------------------------------------------------


def admin_key_path(data_dir: Path) -> Path:
    """The admin's private key (PEM, 0600), on the administrator's machine only."""
    return data_dir / "keys" / "admin" / "admin.key"


def encode_public(public_key: bytes) -> str:
    """How a public key is written and typed: base64 of the raw 32 bytes."""
    return base64.b64encode(public_key).decode()


def decode_public(text: str, what: str) -> bytes:
    """A public key as :func:`encode_public` writes it; raises :class:`InvalidInput` naming ``what``."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not a base64 Ed25519 public key: {text.strip()[:60]!r}",
                           hint="copy it as 'ccpipe admin public-key' or 'ccpipe admin init' printed it",
                           code="enrolment.key.invalid") from exc
    return raw


def init_admin(data_dir: Path) -> bytes:
    """Make the installation's admin key in ``data_dir`` and pin its public half there; returns it.

    Raises :class:`KeyMaterialError` if an admin key exists already (it is never replaced: every
    enrolment was signed with it).
    """
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    write_private(admin_key_path(data_dir), key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public = key.public_key().public_bytes_raw()
    pin_admin_public(data_dir, public)
    return public


def load_admin_key(data_dir: Path) -> Ed25519PrivateKey:
    """The admin's private key; raises :class:`KeyMaterialError` naming what is wrong."""
    path = admin_key_path(data_dir)
    if not path.exists():
        raise KeyMaterialError(f"there is no admin key in {data_dir}",
                               hint="run 'ccpipe admin init' on the administrator's machine (once per installation)")
    return read_ed25519_private_key(path)


def pin_admin_public(data_dir: Path, public_key: bytes) -> None:
    """Pin ``public_key`` as this data directory's admin key; raises if another one is pinned.

    A pinned key is never replaced silently: that would hand trust to whoever set the variable.
    """
    path = admin_public_key_path(data_dir)
    pinned = pinned_admin_public(data_dir)
    if pinned == public_key:
        return
    if pinned is not None:
        raise ConfigurationError(
            f"{data_dir} already trusts admin key {encode_public(pinned)}, not {encode_public(public_key)}",
            hint=f"an installation has one admin key; if it really changed, remove {path} and re-enrol",
            code="enrolment.admin.changed")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(encode_public(public_key) + "\n")
    tmp.replace(path)


def pinned_admin_public(data_dir: Path) -> bytes | None:
    """The admin public key pinned in ``data_dir``, or None (see :func:`ccpipe.pipeline.signing.enrolled_mode`)."""
    path = admin_public_key_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyMaterialError(f"cannot read the pinned admin key {path}: {exc.strerror}") from exc
    try:
        return decode_public(text, f"the pinned admin key {path}")
    except InvalidInput as exc:
        raise KeyMaterialError(exc.message) from exc


def enrolment_copy_path(data_dir: Path) -> Path:
    """The records the mirror last read, kept for offline readers (``ccpipe audit verify``)."""
    return data_dir / "keys" / "events" / "enrolments.json"


def save_records(data_dir: Path, blobs: Iterable[bytes]) -> None:
    """Keep ``blobs`` (as read from NATS) for offline readers; atomic."""
    path = enrolment_copy_path(data_dir)
    text = json.dumps([json.loads(b) for b in blobs], indent=1, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_records(data_dir: Path) -> list[bytes] | None:
    """The records :func:`save_records` kept, or None if there are none; raises for a damaged file."""
    path = enrolment_copy_path(data_dir)
    try:
        docs = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyMaterialError(f"cannot read the enrolment records {path}: {exc}") from exc
    if not isinstance(docs, list):
        raise KeyMaterialError(f"{path} is not a list of enrolment records")
    return [json.dumps(d, sort_keys=True).encode() for d in docs]
