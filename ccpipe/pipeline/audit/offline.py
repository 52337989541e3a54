"""Check a ``ccpipe audit prove --json`` document with nothing but the Python standard library.

This file is self-contained on purpose: ``audit export`` bundles copy it beside the proofs,
and a third party runs ``python3 offline.py proof.json`` without installing ccpipe. It
must therefore import nothing outside the standard library (a test enforces this). It
repeats, independently, what ``ccpipe.pipeline.audit`` does for one proof:

1. the checkpoint is a C2SP signed note with a valid Ed25519 signature by
   ``log_public_key`` (``name+hexkeyhash+base64(0x01 ‖ key)``), and its key hash matches;
2. its text is ``origin\\nsize\\nbase64 root\\n`` and ``size`` equals ``tree_size``;
3. ``leaf`` (base64) is JSON whose ``id`` equals ``event_id``;
4. the RFC 9162 §2.1.3.2 inclusion proof of SHA-256(0x00 ‖ leaf) at ``leaf_index``
   leads to the checkpoint's root.

Ed25519 verification (RFC 8032 §5.1.7) is implemented here with Python integers; it is
slow (milliseconds) but needs no library. It applies ccpipe's one Ed25519 rule (that of
``ccpipe.crypto.ed25519``, i.e. libsodium's): cofactorless, S < L, the re-encoded R compared
byte for byte, and small-order public keys and R refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

__all__ = ["OfflineProofError", "VerifiedProof", "ed25519_verify", "verify_bundle", "verify_proof_offline"]


class OfflineProofError(ValueError):
    """The proof document is malformed or does not prove what it claims."""


# --- Ed25519 (RFC 8032), verification only ------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


def _add(a: _Point, b: _Point) -> _Point:
    # RFC 8032 §5.1.4 addition; complete for all inputs (it also doubles).
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % _P
    pb = (y1 + x1) * (y2 + x2) % _P
    pc = 2 * _D * t1 * t2 % _P
    pd = 2 * z1 * z2 % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(k: int, pt: _Point) -> _Point:
    acc: _Point = (0, 1, 1, 0)
    while k:
        if k & 1:
            acc = _add(acc, pt)
        pt = _add(pt, pt)
        k >>= 1
    return acc


def _decode_point(s: bytes) -> _Point | None:
    # RFC 8032 §5.1.3: y with the sign of x in the top bit; recover x from the curve equation.
    if len(s) != 32:
        return None
    n = int.from_bytes(s, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    elif v * x * x % _P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode_point(pt: _Point) -> bytes:
    x, y, z, _ = pt
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _small_order(pt: _Point) -> bool:
    # [8]P is the identity (X = 0, Y = Z) exactly for the eight points of order dividing 8.
    x, y, z, _ = _mul(8, pt)
    return x % _P == 0 and (y - z) % _P == 0


_BY = 4 * pow(5, _P - 2, _P) % _P
_B = _decode_point(_BY.to_bytes(32, "little"))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(signature) != 64 or _B is None:
        return False
    a = _decode_point(public_key)
    s = int.from_bytes(signature[32:], "little")
    if a is None or s >= _L or _small_order(a):
        return False
    r = _decode_point(signature[:32])
    if r is not None and _small_order(r):  # an R that does not decode fails the comparison below
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % _L
    neg_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    # R' = [S]B − [k]A must re-encode to exactly the R the signature carries.
    return _encode_point(_add(_mul(s, _B), _mul(k, neg_a))) == signature[:32]


# --- the proof document ------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedProof:
    """What a valid proof establishes."""

    event_id: str
    leaf_index: int
    tree_size: int
    origin: str
    root_hex: str


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise OfflineProofError(f"{what} is not base64") from exc


def _open_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes]:
    name, _, rest = vkey.strip().partition("+")
    hex_hash, _, key_b64 = rest.partition("+")
    typed_key = _b64(key_b64, "log_public_key")
    if not name or len(typed_key) != 33 or typed_key[0] != 0x01 or len(hex_hash) != 8:
        raise OfflineProofError("log_public_key is not an Ed25519 C2SP verifier key (name+hash+base64)")
    key_hash = hashlib.sha256(name.encode() + b"\n" + typed_key).digest()[:4]
    if key_hash.hex() != hex_hash.lower():
        raise OfflineProofError("log_public_key's key hash does not match its key")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise OfflineProofError("checkpoint contains a control character")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise OfflineProofError("checkpoint is not a signed note (no blank line before signatures)")
    text, sig_lines = note[: split + 1], note[split + 2 : -1].split("\n")
    verified = False
    for line in sig_lines:
        if not line.startswith("\u2014 "):
            raise OfflineProofError("checkpoint signature line does not start with an em dash")
        sig_name, _, sig_b64 = line[2:].partition(" ")
        raw = _b64(sig_b64, "checkpoint signature")
        if sig_name != name or raw[:4] != key_hash:
            continue  # another key (a witness): not ours to judge
        if not ed25519_verify(typed_key[1:], text.encode(), raw[4:]):
            raise OfflineProofError("the log's signature on the checkpoint does not verify")
        verified = True
    if not verified:
        raise OfflineProofError(f"the checkpoint carries no signature by {name}")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise OfflineProofError("checkpoint text is not origin / size / root")
    root = _b64(lines[2], "checkpoint root")
    if len(root) != 32:
        raise OfflineProofError("checkpoint root is not 32 bytes")
    return lines[0], int(lines[1]), root


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _root_from_path(leaf_hash: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    # RFC 9162 §2.1.3.2.
    if not 0 <= index < size:
        raise OfflineProofError(f"leaf_index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if len(p) != 32 or sn == 0:
            raise OfflineProofError("inclusion_path is too long or holds a hash that is not 32 bytes")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise OfflineProofError("inclusion_path is too short")
    return r


def verify_proof_offline(proof_json: str | bytes | dict[str, Any]) -> VerifiedProof:
    """Check a proof document; returns what it proves or raises :class:`OfflineProofError`."""
    try:
        doc = json.loads(proof_json) if isinstance(proof_json, str | bytes) else proof_json
        event_id, index, size = doc["event_id"], doc["leaf_index"], doc["tree_size"]
        note, vkey, hex_path = doc["checkpoint"], doc["log_public_key"], doc["inclusion_path"]
        leaf = _b64(doc["leaf"], "leaf")
        path = [bytes.fromhex(h) for h in hex_path]
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, OfflineProofError):
            raise
        raise OfflineProofError(f"proof document is malformed: {exc!r}") from exc
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, size)):
        raise OfflineProofError("leaf_index and tree_size must be integers")
    # (1) and (2)
    origin, cp_size, root = _open_checkpoint(str(note), str(vkey))
    if cp_size != size:
        raise OfflineProofError(f"the checkpoint is for size {cp_size}, the proof for size {size}")
    # (3)
    try:
        logged_id = json.loads(leaf).get("id")
    except (ValueError, AttributeError) as exc:
        raise OfflineProofError("leaf is not a JSON event") from exc
    if logged_id != event_id:
        raise OfflineProofError(f"the leaf is event {logged_id!r}, not {event_id!r}")
    # (4)
    if _root_from_path(hashlib.sha256(b"\x00" + leaf).digest(), index, size, path) != root:
        raise OfflineProofError("the inclusion path does not lead to the checkpoint's root")
    return VerifiedProof(event_id, index, size, origin, root.hex())


_EVENT_CONTEXT = b"ccpipe event signature v1\n"


def _event_claims(data: bytes) -> tuple[Any, Any, Any]:
    """(workload id, emitting component, signer key id) an event's bytes state, in either wire form.

    A CloudEvent (``specversion``) names them in ``subject``, ``source`` = ``/ccpipe/<component>[/…]``
    and ``signerkeyid``; the envelope of older logs in ``workload_id`` and ``source``'s fields.
    """
    try:
        doc = json.loads(data)
    except ValueError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    if "specversion" not in doc:
        source = doc.get("source")
        if not isinstance(source, dict):
            source = {}
        return doc.get("workload_id"), source.get("component"), source.get("key_id")
    uri = doc.get("source")
    component = None
    if isinstance(uri, str) and uri.startswith("/ccpipe/"):
        component = urllib.parse.unquote(uri.removeprefix("/ccpipe/").partition("/")[0])
    return doc.get("subject"), component, doc.get("signerkeyid")


def _event_signature_problem(data: bytes, header: Any, components: dict[str, tuple[str, bytes]]) -> str | None:
    # The signature rules of pipeline.event_trust.check_event_signature, restated (the emitter
    # table is not: it is part of ccpipe's contract, which this stand-alone file does not carry).
    if not isinstance(header, str):
        return "unsigned"
    kid, _, sig_b64 = header.partition(":")
    try:
        sig = base64.b64decode(sig_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "malformed signature header"
    owner = components.get(kid)
    if owner is None:
        return f"signed by key {kid}, which the keyring does not hold"
    _, component, claimed_kid = _event_claims(data)
    if not ed25519_verify(owner[1], _EVENT_CONTEXT + data, sig):
        return f"the signature by {owner[0]} ({kid}) does not verify"
    if component != owner[0] or (claimed_kid is not None and claimed_kid != kid):
        return f"signed by {owner[0]}, but the event claims to come from {component!r}"
    return None


def verify_bundle(directory: str) -> list[str]:
    """Check an ``audit export`` bundle: every proof against its checkpoint and the keyring's log
    key, every event's bytes against its proof, every event signature against the keyring.

    Returns one line per problem (empty when everything holds); raises
    :class:`OfflineProofError` when the bundle itself is unreadable.
    """
    def read(name: str) -> bytes:
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()

    try:
        manifest = json.loads(read("manifest.json"))
        keyring = json.loads(read("keyring.json"))
        note = read(str(manifest["checkpoint"])).decode("utf-8")
        log_keys = [str(k) for k in keyring.get("log_keys", [])]
        components = {
            str(k["key_id"]): (str(comp), _b64(k["public_key"], "keyring key"))
            for comp, keys in dict(keyring.get("components", {})).items() for k in keys
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OfflineProofError(f"bundle is unreadable: {exc!r}") from exc
    problems: list[str] = []
    if not any(_try_open(note, k) for k in log_keys):
        problems.append("checkpoint.note is not signed by a log key of keyring.json")
    for entry in manifest.get("events", []):
        where = f"event {entry.get('event_id')} (leaf {entry.get('leaf_index')})"
        try:
            data = read(str(entry["file"]))
            doc = json.loads(read(str(entry["proof"])))
            proved = verify_proof_offline(doc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if _b64(doc["leaf"], "leaf") != data or proved.leaf_index != entry.get("leaf_index"):
            problems.append(f"{where}: the event file is not the proved leaf")
        if doc["checkpoint"] != note or doc["log_public_key"] not in log_keys:
            problems.append(f"{where}: the proof is against another checkpoint or key than the bundle's")
        if _event_claims(data)[0] != manifest.get("workload_id"):
            problems.append(f"{where}: belongs to another workload")
        bad = _event_signature_problem(data, entry.get("signature"), components)
        if bad:
            problems.append(f"{where}: {bad}")
    return problems


def _try_open(note: str, vkey: str) -> bool:
    try:
        _open_checkpoint(note, vkey)
    except OfflineProofError:
        return False
    return True


def main(argv: list[str]) -> int:
    """``python3 offline.py PROOF.json`` or ``python3 offline.py BUNDLE_DIR``: exit 0 and one
    line when everything holds, 1 with the problems otherwise."""
    if len(argv) != 2:
        print("usage: offline.py PROOF.json | BUNDLE_DIR", file=sys.stderr)
        return 2
    if os.path.isdir(argv[1]):
        try:
            problems = verify_bundle(argv[1])
        except OfflineProofError as exc:
            print(f"bundle does NOT verify: {exc}", file=sys.stderr)
            return 1
        for p in problems:
            print(f"bundle does NOT verify: {p}", file=sys.stderr)
        if not problems:
            print(f"ok: every event of the bundle in {argv[1]} is in the log and correctly signed")
        return 1 if problems else 0
    try:
        with open(argv[1], "rb") as f:
            result = verify_proof_offline(f.read())
    except (OSError, OfflineProofError) as exc:
        print(f"proof does NOT verify: {exc}", file=sys.stderr)
        return 1
    print(f"ok: event {result.event_id} is leaf {result.leaf_index} of {result.origin} at size {result.tree_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
