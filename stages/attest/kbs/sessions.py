"""RCAR sessions: a challenge per ``/auth``, consumed by the first ``/attest``, expiring.

Fixes Trustee's rough edges: the nonce is single-use (a second ``/attest`` on a session is
refused, even if the first one failed), and a session expires ``timeout_s`` after ``/auth``
whatever happens (an attested session is not extended). Expired records are dropped on read
and by :meth:`SessionStore.sweep`. In memory, per replica: a client keeps to one replica for
its handshake, and a Bearer token works on any replica that shares the token key.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from stages.attest.kbs.errors import NonceInvalid, SessionMissing

State = Literal["authed", "attesting", "attested", "rejected"]


@dataclass
class Session:
    """One RCAR session."""

    id: str
    tee: str
    nonce: str
    workload_id: str | None
    node_id: str | None
    hash_alg: str
    expires_at: float
    state: State = "authed"
    token: str | None = None
    token_claims: dict[str, Any] = field(default_factory=dict)
    attestation_event_id: str | None = None


class SessionStore:
    """Sessions by id, with expiry; ``clock`` is injectable for tests."""

    def __init__(self, *, timeout_s: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = 100_000) -> None:
        """Sessions live ``timeout_s`` (Trustee default 5 min); at most ``max_sessions`` at once."""
        self.timeout_s = timeout_s
        self._clock = clock
        self._max = max_sessions
        self._sessions: dict[str, Session] = {}
        self._created = 0

    def create(self, tee: str, *, workload_id: str | None, node_id: str | None, hash_alg: str) -> Session:
        """A new session with a fresh 32-byte nonce (base64, 44 characters).

        Raises :class:`SessionMissing` when ``max_sessions`` live sessions exist.
        """
        self._created += 1
        if len(self._sessions) >= self._max or self._created % 1024 == 0:
            self.sweep()  # amortised: expired sessions never pile up
        if len(self._sessions) >= self._max:
            # Refusing new sessions is better than evicting live ones an attacker could target.
            raise SessionMissing("the KBS has too many open sessions; retry shortly")
        session = Session(
            id=uuid.uuid4().hex, tee=tee, nonce=base64.b64encode(secrets.token_bytes(32)).decode(),
            workload_id=workload_id, node_id=node_id, hash_alg=hash_alg,
            expires_at=self._clock() + self.timeout_s,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session:
        """The live session; raises :class:`SessionMissing` for none, an unknown or an expired one."""
        if not session_id:
            raise SessionMissing("no kbs-session-id cookie")
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionMissing("unknown or expired session")
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            raise SessionMissing("the session has expired")
        return session

    def peek(self, session_id: str | None) -> Session | None:
        """The session even if expired (for the audit event of a refusal), or None."""
        return self._sessions.get(session_id) if session_id else None

    def begin_attestation(self, session: Session, nonce: str) -> None:
        """Consume the session's nonce for one attestation.

        Raises :class:`NonceInvalid` if the nonce is not the session's or was already used.
        """
        if session.state != "authed":
            raise NonceInvalid("this session's nonce was already used; request a new challenge")
        session.state = "attesting"
        if not secrets.compare_digest(nonce.encode(), session.nonce.encode()):
            session.state = "rejected"
            raise NonceInvalid("runtime-data nonce is not the nonce of this session's challenge")

    def sweep(self) -> int:
        """Drop expired sessions; returns how many."""
        now = self._clock()
        dead = [sid for sid, s in self._sessions.items() if s.expires_at <= now]
        for sid in dead:
            del self._sessions[sid]
        return len(dead)

    def __len__(self) -> int:
        """Number of sessions held (live or not yet swept)."""
        return len(self._sessions)
