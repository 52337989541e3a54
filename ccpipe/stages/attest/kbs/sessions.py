"""RCAR sessions that every KBS replica understands: sealed cookies and a shared nonce ledger.

A session's state travels with the client: the ``kbs-session-id`` cookie is the session sealed
with AES-256-GCM under the replicas' shared session key (``session.key``, see :mod:`.key_dir`),
so a handshake may hop between KBS processes (``ccpipe kbs serve --workers N``, or replicas
behind a load balancer) and no replica keeps per-session memory. What must not be forgeable or
replayable is checked here:

* the cookie opens only under the session key (a flipped bit, another key, a truncated or
  invented value is "unknown session");
* a session expires ``timeout_s`` after ``/auth`` whatever happens (Trustee's default 5 min);
  the attested session is not extended;
* the nonce is single-use: the first ``/attest`` on a session spends it in the
  :class:`NonceLedger` shared by the replicas (NATS KV ``CCPIPE_KBS_NONCES`` by default), even
  if that attempt fails — a second ``/attest`` with the same cookie is refused on any replica.

After a successful ``/attest`` the client gets a new cookie holding the token claims (state
``attested``), so ``/resource`` needs no look-up either.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ccpipe.stages.attest.kbs.errors import NonceInvalid, SessionMissing
from ccpipe.stages.attest.kbs.key_dir import SESSION_KEY_FILE, load_kbs_secret

State = Literal["authed", "attested"]
_VERSION = b"\x01"
_AAD = b"ccpipe-kbs-session/1"
COOKIE_LIMIT = 4000
"""Longest cookie value we set (clients keep at least 4096 bytes per cookie, RFC 6265 §6.1)."""
MAX_COOKIE_CHARS = 16_384
"""A longer cookie is not one of ours: refused before any decoding."""


@dataclass
class Session:
    """One RCAR session (what the sealed cookie holds), plus its cookie value."""

    id: str
    tee: str
    nonce: str
    workload_id: str | None
    node_id: str | None
    hash_alg: str
    expires_at: float
    """Unix time; replicas compare it with their own clock."""
    state: State = "authed"
    token_claims: dict[str, Any] = field(default_factory=dict)
    attestation_event_id: str | None = None
    challenge_event_id: str | None = None
    cookie: str = ""
    """The sealed value to send as ``kbs-session-id``; set by :class:`SessionStore`."""

    def _doc(self) -> dict[str, Any]:
        return {"i": self.id, "t": self.tee, "n": self.nonce, "w": self.workload_id, "o": self.node_id,
                "h": self.hash_alg, "e": self.expires_at, "s": self.state, "c": self.token_claims,
                "a": self.attestation_event_id, "x": self.challenge_event_id}

    @classmethod
    def _from_doc(cls, doc: dict[str, Any], cookie: str) -> Session:
        state = doc["s"]
        if state not in ("authed", "attested") or not isinstance(doc["c"], dict):
            raise ValueError("bad session state")
        return cls(id=str(doc["i"]), tee=str(doc["t"]), nonce=str(doc["n"]), workload_id=doc["w"],
                   node_id=doc["o"], hash_alg=str(doc["h"]), expires_at=float(doc["e"]), state=state,
                   token_claims=doc["c"], attestation_event_id=doc["a"], challenge_event_id=doc["x"],
                   cookie=cookie)


def load_session_key(data_dir: Path) -> bytes:
    """The replicas' 32-byte session key (see :mod:`ccpipe.stages.attest.kbs.key_dir`: created
    0600 on first use in the data directory, or read from ``CCPIPE_KBS_KEYS_DIR``).

    Raises :class:`SessionMissing` if the file is not a 32-byte key, and
    :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` if the configured one cannot be read.
    """
    path, key = load_kbs_secret(data_dir, SESSION_KEY_FILE)
    if len(key) != 32:
        raise SessionMissing(f"session key {path} is not 32 bytes; replace it with 32 random bytes")
    return key


class NonceLedger(Protocol):
    """Where replicas record spent session nonces."""

    async def spend(self, session: Session) -> bool:
        """Record ``session``'s nonce as used; True the first time, False ever after.

        Raises :class:`~ccpipe.stages.attest.kbs.errors.AuditUnavailable` when the ledger cannot be
        reached (then nothing may be released).
        """
        ...


class MemoryNonceLedger:
    """A ledger for one process (tests, a single embedded KBS without NATS)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """Entries are dropped once their session has expired."""
        self._spent: dict[str, float] = {}
        self._clock = clock

    async def spend(self, session: Session) -> bool:
        """True the first time ``session.id`` is spent."""
        now = self._clock()
        if len(self._spent) > 4096:
            self._spent = {k: v for k, v in self._spent.items() if v > now}
        if session.id in self._spent:
            return False
        self._spent[session.id] = session.expires_at
        return True


class SessionStore:
    """Creates, seals, opens and spends sessions; ``clock`` (unix seconds) is settable for tests."""

    def __init__(self, key: bytes | None = None, *, ledger: NonceLedger | None = None, timeout_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        """Seal with ``key`` (random per store if None: then only this store opens its cookies)."""
        self._aead = AESGCM(key if key is not None else secrets.token_bytes(32))
        self.ledger: NonceLedger = ledger if ledger is not None else MemoryNonceLedger(lambda: self.clock())
        self.timeout_s = timeout_s
        self.clock = clock

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, ledger: NonceLedger | None = None,
                     timeout_s: float = 300.0) -> SessionStore:
        """The store whose key is the replicas' session key (:func:`load_session_key`)."""
        return cls(load_session_key(data_dir), ledger=ledger, timeout_s=timeout_s)

    def create(self, tee: str, *, workload_id: str | None, node_id: str | None, hash_alg: str,
               challenge_event_id: str | None = None) -> Session:
        """A new session with a fresh 32-byte nonce (base64, 44 characters) and its cookie."""
        session = Session(
            id=uuid.uuid4().hex, tee=tee, nonce=base64.b64encode(secrets.token_bytes(32)).decode(),
            workload_id=workload_id, node_id=node_id, hash_alg=hash_alg, expires_at=self.clock() + self.timeout_s,
            challenge_event_id=challenge_event_id)
        return self.seal(session)

    def seal(self, session: Session) -> Session:
        """Set ``session.cookie`` to its sealed state; returns the session."""
        iv = secrets.token_bytes(12)
        # Compressed so an attested session (with its token claims) stays under the 4 KiB
        # clients keep per cookie; the plaintext holds nothing the client does not already know.
        plain = zlib.compress(orjson.dumps(session._doc()), 1)
        raw = _VERSION + iv + self._aead.encrypt(iv, plain, _AAD)
        session.cookie = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if len(session.cookie) > COOKIE_LIMIT:
            raise SessionMissing(f"the session state is {len(session.cookie)} characters sealed, over the "
                                 f"{COOKIE_LIMIT} a client keeps per cookie (the attestation's claims are too large)")
        return session

    def attested(self, session: Session, claims: dict[str, Any], event_id: str) -> Session:
        """The session after a successful ``/attest``, resealed with the token claims."""
        session.state, session.token_claims, session.attestation_event_id = "attested", claims, event_id
        return self.seal(session)

    def peek(self, cookie: str | None) -> Session | None:
        """The session sealed in ``cookie`` even if expired (for a refusal's audit event), or None."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            if raw[:1] != _VERSION or len(raw) < 1 + 12 + 16:
                return None
            inflate = zlib.decompressobj()
            doc = orjson.loads(inflate.decompress(self._aead.decrypt(raw[1:13], raw[13:], _AAD), 1 << 16))
            return Session._from_doc(doc, cookie)
        except (InvalidTag, binascii.Error, zlib.error, ValueError, KeyError, TypeError):
            return None

    def get(self, cookie: str | None, *, opened: Session | None = None) -> Session:
        """The live session; raises :class:`SessionMissing` for none, a forged or an expired one.

        ``opened`` is what :meth:`peek` already returned for ``cookie`` (not opened twice).
        """
        if not cookie:
            raise SessionMissing("no kbs-session-id cookie")
        session = opened if opened is not None and opened.cookie == cookie else self.peek(cookie)
        if session is None:
            raise SessionMissing("unknown or expired session")
        if session.expires_at <= self.clock():
            raise SessionMissing("the session has expired")
        return session

    async def begin_attestation(self, session: Session, nonce: str) -> None:
        """Spend the session's nonce for one attestation, then check ``nonce`` is it.

        Raises :class:`NonceInvalid` if the session is already attested, its nonce was spent
        (on any replica), or ``nonce`` is not the session's (which spends it too).
        """
        if session.state != "authed" or not await self.ledger.spend(session):
            raise NonceInvalid("this session's nonce was already used; request a new challenge")
        if not secrets.compare_digest(nonce.encode(), session.nonce.encode()):
            raise NonceInvalid("runtime-data nonce is not the nonce of this session's challenge")

    async def spend(self, session: Session) -> None:
        """Use up an authed session's nonce without attesting (a refused ``/attest`` body)."""
        if session.state == "authed":
            await self.ledger.spend(session)
