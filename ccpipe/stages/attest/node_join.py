"""Node admission, pure core: a runner node joins the inventory only by attesting.

:class:`NodeAdmission` issues challenges (nonces) and verifies a node's join evidence with the
attestation service's own verifiers (the code the KBS appraises enclaves with): the chain and
signature of the report, the installation's emulation setting, and that report_data is
:func:`~ccpipe.schemas.nodes.join_report_data` of the nonce, the node id and the node key. What
it returns — the TEE type, backend (``hardware`` or ``emulated``) and TCB the *verifier* found —
is what the scheduler places work by; nothing the node says about itself is kept.

A nonce is stateless (time, random, HMAC under a key in the data directory), so replicas that
share the data directory accept each other's challenges; each replica remembers the nonces it
has seen used until they expire, so a join request cannot be replayed to it. No NATS here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from ccpipe.pipeline.keyfiles import load_or_create_private_file
from ccpipe.schemas.events import NodeAttested
from ccpipe.schemas.nodes import NodeChallenge, NodeJoinRequest, join_report_data
from ccpipe.stages.attest.appraisal import AttestationService, evidence_digest
from ccpipe.stages.attest.errors import AttestationError, EvidenceMalformed
from ccpipe.stages.attest.kbs.requirements import verified_tcb
from ccpipe.stages.attest.verifiers import Binding

NONCE_TTL_S = 60.0
"""How long a challenge may be answered."""
MAX_EVIDENCE_BYTES = 1 << 20
_NONCE_RANDOM = 16
_NONCE_MAC = 16
_NODE_KEY_BYTES = 32


class NodeJoinRefused(AttestationError):
    """A node's join request was refused (bad nonce, key or evidence); the message says which check failed."""

    code = "attest.node.refused"
    default_hint = "restart the runner so that it attests again with a fresh challenge; see the message"


def nonce_key_path(data_dir: Path) -> Path:
    """The HMAC key of node-join nonces (shared by every replica on ``data_dir``)."""
    return data_dir / "keys" / "kbs" / "node-join-nonce.key"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise NodeJoinRefused(f"not base64url: {exc}") from None


class NodeAdmission:
    """Challenges and verifies joining nodes (see the module docstring)."""

    def __init__(self, service: AttestationService, secret: bytes, *, nonce_ttl_s: float = NONCE_TTL_S) -> None:
        """Verify with ``service``'s verifiers; sign nonces with ``secret``."""
        self.service = service
        self._secret = secret
        self.nonce_ttl_s = nonce_ttl_s
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, service: AttestationService, data_dir: Path) -> NodeAdmission:
        """Admission with the nonce key of ``data_dir`` (created on first use, 0600)."""
        return cls(service, load_or_create_private_file(nonce_key_path(data_dir), lambda: os.urandom(32)))

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_NONCE_MAC]

    def challenge(self) -> NodeChallenge:
        """A fresh nonce, valid for :attr:`nonce_ttl_s` seconds."""
        issued = time.time()
        body = struct.pack(">d", issued) + os.urandom(_NONCE_RANDOM)
        return NodeChallenge(nonce=_b64url(body + self._mac(body)),
                             expires_at=datetime.fromtimestamp(issued + self.nonce_ttl_s, UTC))

    def _spend(self, nonce: str) -> None:
        raw = _b64url_decode(nonce)
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if len(body) != 8 + _NONCE_RANDOM or not hmac.compare_digest(mac, self._mac(body)):
            raise NodeJoinRefused("the nonce was not issued by this attestation service")
        (issued,) = struct.unpack(">d", body[:8])
        now = time.time()
        if not issued - 5.0 <= now <= issued + self.nonce_ttl_s:
            raise NodeJoinRefused("the nonce has expired; ask for a new challenge")
        with self._lock:
            for old, until in list(self._used.items()):
                if until < now:
                    del self._used[old]
            if nonce in self._used:
                raise NodeJoinRefused("the nonce was already used")
            self._used[nonce] = issued + self.nonce_ttl_s

    def verify(self, request: NodeJoinRequest) -> NodeAttested:
        """The verified facts of a joining node; raises :class:`AttestationError` naming the failed check.

        The request's ``tee`` only chooses the verifier: the record holds what the verified
        evidence is.
        """
        if len(_b64url_decode(request.node_key)) != _NODE_KEY_BYTES:
            raise NodeJoinRefused(f"the node key must be an Ed25519 public key ({_NODE_KEY_BYTES} bytes)")
        if len(request.evidence) > MAX_EVIDENCE_BYTES * 4 // 3 + 4:
            raise NodeJoinRefused(f"the evidence exceeds {MAX_EVIDENCE_BYTES} bytes")
        try:
            evidence = base64.b64decode(request.evidence, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EvidenceMalformed(f"the evidence is not base64: {exc}") from None
        self._spend(request.nonce)
        expected = join_report_data(request.nonce, request.node_id, request.node_key)
        try:
            claims = self.service.verifier(request.tee).verify(evidence, Binding(report_data=expected))
        except (ValueError, TypeError, KeyError, IndexError, struct.error, RecursionError, ValidationError) as exc:
            # a parser bug must still be a refusal, never a crash of the service
            raise EvidenceMalformed(f"the evidence could not be parsed: {exc}") from exc
        if claims.debug:
            raise NodeJoinRefused("the node's TEE is debuggable: its host could read the node key")
        return NodeAttested(
            node_id=request.node_id, node_key=request.node_key, tee=claims.tee,
            backend="emulated" if claims.emulated else "hardware", emulated=claims.emulated,
            tcb=verified_tcb(claims.tee.value, claims.tcb), product=claims.product,
            measurement=claims.measurement, evidence_digest=evidence_digest(evidence),
        )


__all__ = ["NONCE_TTL_S", "NodeAdmission", "NodeJoinRefused", "nonce_key_path"]
