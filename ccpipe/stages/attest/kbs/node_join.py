"""Node admission, pure core: a runner node joins the inventory only by attesting.

:class:`NodeAdmission` issues challenges (nonces) and verifies a node's join evidence with the
attestation service's own verifiers (the code the KBS appraises enclaves with): the chain and
signature of the report, the installation's emulation setting, and that report_data is
:func:`~ccpipe.schemas.nodes.join_report_data` of the nonce, the node id and the node key. What
it returns — the TEE type, backend (``hardware`` or ``emulated``) and TCB the *verifier* found —
is what the scheduler places work by; nothing the node says about itself is kept.

Nonces are random, kept in memory until used or expired, and spent once: the instance that
issued one is the one the node answers (its own join subject), so replicas need share nothing
and a join request cannot be replayed. No NATS here.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
import threading
import time
from datetime import UTC, datetime

from pydantic import ValidationError

from ccpipe.crypto import jose
from ccpipe.schemas.events import NodeAttested
from ccpipe.schemas.nodes import NodeChallenge, NodeJoinRequest, join_report_data
from ccpipe.stages.attest.appraisal import AttestationService, evidence_digest
from ccpipe.stages.attest.errors import AttestationError, EvidenceMalformed
from ccpipe.stages.attest.kbs.requirements import verified_tcb
from ccpipe.stages.attest.verifiers import Binding

NONCE_TTL_S = 60.0
"""How long a challenge may be answered."""
MAX_EVIDENCE_BYTES = 1 << 20
MAX_OUTSTANDING = 10_000
"""Challenges kept at once; past that the oldest go first (a flood of challenges costs memory, not correctness)."""
_NODE_KEY_BYTES = 32


class NodeJoinRefused(AttestationError):
    """A node's join request was refused (bad nonce, key or evidence); the message says which check failed."""

    code = "attest.node.refused"
    default_hint = "restart the runner so that it attests again with a fresh challenge; see the message"


def _b64url_decode(text: str) -> bytes:
    try:
        return jose.b64url_decode(text)
    except ValueError as exc:
        raise NodeJoinRefused(str(exc)) from None


class NodeAdmission:
    """Challenges and verifies joining nodes (see the module docstring)."""

    def __init__(self, service: AttestationService, join_subject: str, *, nonce_ttl_s: float = NONCE_TTL_S) -> None:
        """Verify with ``service``'s verifiers; challenges name ``join_subject`` (this instance's)."""
        self.service = service
        self.join_subject = join_subject
        self.nonce_ttl_s = nonce_ttl_s
        self._outstanding: dict[str, float] = {}
        """Nonce → expiry (monotonic clock), in issue order."""
        self._lock = threading.Lock()

    def challenge(self) -> NodeChallenge:
        """A fresh nonce, valid once for :attr:`nonce_ttl_s` seconds."""
        nonce = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for old, until in list(self._outstanding.items()):
                if until >= now and len(self._outstanding) < MAX_OUTSTANDING:
                    break  # issue order: the rest expire later
                del self._outstanding[old]
            self._outstanding[nonce] = now + self.nonce_ttl_s
        return NodeChallenge(nonce=nonce, join_subject=self.join_subject,
                             expires_at=datetime.fromtimestamp(time.time() + self.nonce_ttl_s, UTC))

    def _spend(self, nonce: str) -> None:
        with self._lock:
            until = self._outstanding.pop(nonce, None)
        if until is None:
            raise NodeJoinRefused("the nonce was not issued by this attestation service, or was already used")
        if until < time.monotonic():
            raise NodeJoinRefused("the nonce has expired; ask for a new challenge")

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


__all__ = ["MAX_OUTSTANDING", "NONCE_TTL_S", "NodeAdmission", "NodeJoinRefused"]
