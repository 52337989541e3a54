"""The KBS's audit events: one per challenge, one per attestation verdict, one per resource decision.

Every event is stored (JetStream ack) *before* the HTTP/NATS answer; if storing fails the
caller gets :class:`~ccpipe.stages.attest.kbs.errors.AuditUnavailable` and nothing is released. Events
go to the workload's subject: the workload the client named in ``extra-params``, or for a
``ccpipe/<workload>/<name>`` resource the workload in the path; requests that name none go to
:data:`UNSCOPED_WORKLOAD`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccpipe.schemas.envelope import Event, Source, Subject, derived_msg_id
from ccpipe.schemas.errors import CcpipeError
from ccpipe.schemas.events import (
    AttestationChallenged,
    AttestationRejected,
    AttestationVerified,
    EventType,
    KbsAdminChanged,
    KbsRequestsRefused,
    KeyDenied,
    KeyReleased,
)
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.appraiser import AppraisalOutcome
from ccpipe.stages.attest.kbs.errors import AuditUnavailable

if TYPE_CHECKING:
    from ccpipe.stages.attest.kbs.refusals import Tally
    from ccpipe.stages.attest.kbs.sessions import Session

COMPONENT = "kbs"
UNSCOPED_WORKLOAD = "kbs-unscoped"
ADMIN_WORKLOAD = "kbs-admin"
"""Subject token of ``kbs.admin.changed`` events: one trail of every administrative change."""
_WL = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")

Publish = Callable[[Event, str], Awaitable[None]]
"""Stores one event with a de-duplication id; raises on failure."""

_SOURCE = Source(component=COMPONENT, instance=f"{socket.gethostname()}:{os.getpid()}")


def event_workload(workload_id: str | None) -> str:
    """The subject token for events of ``workload_id`` (unscoped if absent or not a token)."""
    return workload_id if workload_id and _WL.match(workload_id) else UNSCOPED_WORKLOAD


def _tee(tee: str | None) -> TeeType | None:
    try:
        return TeeType(tee) if tee else None
    except ValueError:
        return None


class AuditEvents:
    """Builds and stores the KBS's events."""

    def __init__(self, publish: Publish) -> None:
        """Store events with ``publish``."""
        self._publish = publish

    async def _store(self, event: Event, dedup: str) -> None:
        try:
            await self._publish(event, derived_msg_id(event.workload_id, event.type, dedup))
        except CcpipeError as exc:
            raise AuditUnavailable(f"the {event.type.value} event could not be stored: {exc.message}") from exc
        except Exception as exc:  # any failure to store means: release nothing
            raise AuditUnavailable(f"the {event.type.value} event could not be stored: {exc!r}") from exc

    async def attestation_challenged(self, session: Session, *, event_id: str, request_id: str) -> Event:
        """Store ``attestation.challenged`` for a new session (before its challenge is sent)."""
        event = Event(
            id=event_id, type=EventType.ATTESTATION_CHALLENGED, workload_id=event_workload(session.workload_id),
            source=_SOURCE, subject=Subject(node=session.node_id),
            payload=AttestationChallenged(
                tee=_tee(session.tee) or TeeType.SAMPLE, nonce=session.nonce, session_id=session.id,
                expires_at=datetime.fromtimestamp(session.expires_at, UTC), hash_alg=session.hash_alg,
                node_id=session.node_id,
            ),
        )
        await self._store(event, request_id)
        return event

    async def attestation_verified(self, *, workload_id: str | None, outcome: AppraisalOutcome, evidence: bytes,
                                   token_id: str, node_id: str | None, thumbprint: str, request_id: str,
                                   event_id: str, claimed_node_id: str | None = None,
                                   challenge_event_id: str | None = None,
                                   additional_evidence: str | None = None) -> Event:
        """Store ``attestation.verified`` with id ``event_id``; returns the event."""
        tee = _tee(outcome.tee) or TeeType.SAMPLE
        event = Event(
            id=event_id, type=EventType.ATTESTATION_VERIFIED, workload_id=event_workload(workload_id), source=_SOURCE,
            subject=Subject(node=node_id),
            payload=AttestationVerified(
                tee=tee, backend=outcome.backend, emulated=outcome.emulated, evidence_digest=outcome.evidence_digest,
                claims=outcome.claims, ear_status=outcome.ear_status, evidence=base64.b64encode(evidence).decode(),
                measurement=outcome.measurement, tcb=outcome.tcb, trust_vector=outcome.trust_vector,
                policy_id=outcome.policy_id, policy_digest=outcome.policy_digest, token_id=token_id,
                node_id=node_id, claimed_node_id=claimed_node_id, tee_pubkey_thumbprint=thumbprint,
                challenge_event_id=challenge_event_id, additional_evidence=additional_evidence or None,
            ),
        )
        await self._store(event, request_id)
        return event

    async def attestation_rejected(self, *, workload_id: str | None, reason: FailureReason, tee: str | None,
                                   evidence: bytes | None, outcome: AppraisalOutcome | None, node_id: str | None,
                                   thumbprint: str | None, request_id: str,
                                   challenge_event_id: str | None = None,
                                   additional_evidence: str | None = None) -> Event:
        """Store ``attestation.rejected`` (evidence kept when there was any); returns the event."""
        digest = "sha256:" + hashlib.sha256(evidence).hexdigest() if evidence is not None else None
        event = Event(
            type=EventType.ATTESTATION_REJECTED, workload_id=event_workload(workload_id), source=_SOURCE,
            subject=Subject(node=node_id),
            payload=AttestationRejected(
                tee=_tee(tee), backend=outcome.backend if outcome else None, evidence_digest=digest, reason=reason,
                evidence=base64.b64encode(evidence).decode() if evidence is not None else None,
                emulated=outcome.emulated if outcome else None,
                policy_id=outcome.policy_id if outcome else None,
                policy_digest=outcome.policy_digest if outcome else None,
                node_id=node_id, tee_pubkey_thumbprint=thumbprint, challenge_event_id=challenge_event_id,
                additional_evidence=additional_evidence or None,
            ),
        )
        await self._store(event, request_id)
        return event

    async def key_released(self, *, workload_id: str | None, resource: str, token: dict[str, Any],
                           thumbprint: str, policy_id: str, rule: str, request_id: str) -> Event:
        """Store ``key.released``; returns the event."""
        ccpipe = token.get("ccpipe", {})
        raw = base64.urlsafe_b64decode(thumbprint + "=" * (-len(thumbprint) % 4))
        event = Event(
            type=EventType.KEY_RELEASED, workload_id=event_workload(workload_id), source=_SOURCE,
            subject=Subject(key_id=resource, node=ccpipe.get("node_id")),
            payload=KeyReleased(
                resource=resource, node_id=ccpipe.get("node_id"), claimed_node_id=ccpipe.get("claimed_node_id"),
                attestation_event_id=ccpipe.get("attestation_event_id"),
                recipient_key_digest="sha256:" + raw.hex(), token_id=token.get("jti"),
                tee_pubkey_thumbprint=thumbprint, policy_id=policy_id, rule=rule,
            ),
        )
        await self._store(event, request_id)
        return event

    async def key_denied(self, *, workload_id: str | None, resource: str, reason: FailureReason,
                         token: dict[str, Any] | None, thumbprint: str | None, node_id: str | None,
                         policy_id: str | None, rule: str | None, request_id: str) -> Event:
        """Store ``key.denied`` with the failed rule; returns the event.

        ``node_id`` is the node the session named; the event names the node the token's
        attestation proved, and keeps a name nothing proved as ``claimed_node_id``.
        """
        ccpipe = (token or {}).get("ccpipe", {})
        proven = ccpipe.get("node_id")
        claimed = node_id if node_id not in (None, proven) else ccpipe.get("claimed_node_id")
        event = Event(
            type=EventType.KEY_DENIED, workload_id=event_workload(workload_id), source=_SOURCE,
            subject=Subject(key_id=resource[:512], node=proven),
            payload=KeyDenied(
                resource=resource[:512], node_id=proven, claimed_node_id=claimed, reason=reason,
                token_id=(token or {}).get("jti"), tee_pubkey_thumbprint=thumbprint, policy_id=policy_id,
                rule=rule, attestation_event_id=ccpipe.get("attestation_event_id"),
            ),
        )
        await self._store(event, request_id)
        return event

    async def admin_changed(self, *, action: str, target: str, claims: dict[str, Any], detail: dict[str, str],
                            request_id: str) -> Event:
        """Store ``kbs.admin.changed`` (before the change is made); returns the event."""
        def text(value: Any) -> str | None:
            return str(value)[:256] if value is not None else None

        event = Event(
            type=EventType.KBS_ADMIN_CHANGED, workload_id=ADMIN_WORKLOAD, source=_SOURCE,
            subject=Subject(key_id=target[:512] if action.startswith("resource.") else None),
            payload=KbsAdminChanged(action=action, target=target[:512], role=text(claims.get("role")),
                                    admin=text(claims.get("sub")), token_id=text(claims.get("jti")), detail=detail),
        )
        await self._store(event, request_id)
        return event

    async def requests_refused(self, client: str, kind: str, tally: Tally, interval_s: float) -> Event:
        """Store ``kbs.refused``: the summary of one client's refused requests of ``kind`` in one interval."""
        event = Event(
            type=EventType.KBS_REFUSED, workload_id=ADMIN_WORKLOAD if kind == "admin" else UNSCOPED_WORKLOAD,
            source=_SOURCE,
            payload=KbsRequestsRefused(client=client[:256], kind=kind, count=tally.count, reasons=dict(tally.reasons),
                                       first_at=tally.first_at, last_at=tally.last_at, interval_s=interval_s),
        )
        await self._store(event, f"{client}:{kind}:{tally.first_at.isoformat()}")
        return event
