"""DSSE envelopes (v1.0) and in-toto Statement v1 payloads.

The signature covers the pre-authentication encoding, never the raw payload::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where LEN is the ASCII decimal byte length. ``keyid`` is an unauthenticated hint: verification
tries every signature against the given key whatever its keyid says.

Imports nothing of the project but ``ccpipe.stages.sign``'s own modules.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ccpipe.stages.sign.errors import PayloadInvalid, SignatureInvalid
from ccpipe.stages.sign.keys import PrivateKey, PublicKey, sign_bytes, verify_bytes

PAYLOAD_TYPE_IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of ``payload``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    """One signature of an envelope."""

    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the payload bytes, their type, and the signatures over their PAE."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        """The envelope's JSON (standard base64, as the spec and cosign write it)."""
        doc = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> Envelope:
        """Parse an envelope (base64 or base64url fields accepted); raises :class:`PayloadInvalid`."""
        try:
            doc = dict(data) if isinstance(data, Mapping) else json.loads(data)
            payload_type = doc["payloadType"]
            payload = _b64any(doc["payload"])
            sigs = tuple(Signature(_b64any(s["sig"]), str(s.get("keyid") or "")) for s in doc["signatures"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise PayloadInvalid("not a DSSE envelope (payloadType, payload, signatures)") from exc
        if not isinstance(payload_type, str) or not sigs:
            raise PayloadInvalid("DSSE envelope has no payloadType or no signature")
        return cls(payload, payload_type, sigs)


def _b64any(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a string")
    padded = value + "=" * (-len(value) % 4)
    if "-" in value or "_" in value:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def sign_envelope(payload: bytes, payload_type: str, key: PrivateKey, keyid: str = "") -> Envelope:
    """Sign ``payload`` (over its PAE) into a one-signature envelope."""
    return Envelope(payload, payload_type, (Signature(sign_bytes(key, pae(payload_type, payload)), keyid),))


def verify_envelope(envelope: Envelope, key: PublicKey) -> tuple[str, bytes]:
    """``(payload_type, payload)`` if any signature verifies with ``key``; else :class:`SignatureInvalid`."""
    message = pae(envelope.payload_type, envelope.payload)
    if any(verify_bytes(key, s.sig, message) for s in envelope.signatures):
        return envelope.payload_type, envelope.payload
    raise SignatureInvalid("no signature of the DSSE envelope verifies with this key")


def statement(subjects: Sequence[tuple[str, str]], predicate_type: str, predicate: Mapping[str, Any]) -> bytes:
    """An in-toto Statement v1 about ``subjects`` (``(name, "sha256:<hex>")`` pairs), as JSON bytes."""
    subject = []
    for name, digest in subjects:
        algo, sep, hexpart = digest.partition(":")
        if not sep or not hexpart:
            raise PayloadInvalid(f"subject digest {digest!r} is not ALGO:HEX")
        subject.append({"name": name, "digest": {algo: hexpart}})
    doc = {
        "_type": STATEMENT_V1,
        "subject": subject,
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_statement(payload: bytes) -> dict[str, Any]:
    """A Statement v1 (or v0.1) from a verified payload; raises :class:`PayloadInvalid`."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise PayloadInvalid("in-toto statement is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("_type") not in (
        STATEMENT_V1,
        "https://in-toto.io/Statement/v0.1",
    ):
        raise PayloadInvalid("payload is not an in-toto statement")
    subjects = doc.get("subject")
    if (
        not isinstance(subjects, list)
        or not subjects
        or not all(isinstance(s, dict) and isinstance(s.get("digest"), dict) for s in subjects)
    ):
        raise PayloadInvalid("in-toto statement has no subject with a digest")
    if not isinstance(doc.get("predicateType"), str):
        raise PayloadInvalid("in-toto statement has no predicateType")
    return doc


def statement_covers(doc: Mapping[str, Any], digest: str) -> bool:
    """Whether one of the statement's subjects has ``digest`` (``algo:hex``)."""
    algo, _, hexpart = digest.partition(":")
    return any(s["digest"].get(algo) == hexpart for s in doc["subject"])
