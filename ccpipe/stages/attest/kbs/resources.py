"""Resource release: token → requirements → policy → store → JWE, with one audit event per request.

The token comes from the attested session (cookie, re-verified) or ``Authorization: Bearer``.
The order matters: a workload's resource goes only to a token of that workload whose verified
TEE meets the workload's registered ``[tee]`` requirements (:mod:`.requirements`, in code,
before any resource policy); the policy is evaluated before the resource is read, so an
unauthorised requester cannot learn whether a resource exists; the ``key.released`` event is
stored before the JWE is returned, so a release the trail does not know about cannot happen.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from ccpipe.crypto import jose
from ccpipe.schemas.kbs import FlattenedJwe
from ccpipe.stages.attest.kbs.audit import AuditEvents
from ccpipe.stages.attest.kbs.binding import import_tee_pubkey, tee_pubkey_thumbprint
from ccpipe.stages.attest.kbs.errors import (
    AuditUnavailable,
    KbsError,
    PolicyDenied,
    ResourceNotFound,
    ResourceStoreError,
    SessionMissing,
    TokenInvalid,
)
from ccpipe.stages.attest.kbs.ports import Policies
from ccpipe.stages.attest.kbs.release import ResourceDecision, workload_decision
from ccpipe.stages.attest.kbs.requirements import requirements_path, tee_decision
from ccpipe.stages.attest.kbs.sessions import Session, SessionStore
from ccpipe.stages.attest.kbs.store import ResourceStore, check_resource_path
from ccpipe.stages.attest.kbs.tokens import TokenBroker, tee_pubkey_of


def path_workload(path: str) -> str | None:
    """The workload of a ``ccpipe/<workload>/<name>`` path, else None."""
    parts = path.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "ccpipe" else None


@dataclass
class ResourceReleaser:
    """Serves ``GET /kbs/v0/resource/<repository>/<type>/<tag>``."""

    sessions: SessionStore
    tokens: TokenBroker
    store: ResourceStore
    policies: Policies
    events: AuditEvents
    inline_decisions: bool = False
    """Decide on the event loop (see :attr:`KbsCore.inline_appraisal`)."""
    allow_emulated: bool = False
    """Whether this installation accepts emulated TEEs at all (and a workload's own consent too)."""

    def _claims(self, session_id: str | None, bearer: str | None, opened: Session | None) -> dict[str, Any]:
        if session_id:
            try:
                session = self.sessions.get(session_id, opened=opened)
                if session.state != "attested" or not session.token_claims:
                    raise SessionMissing("this session has not passed attestation")
                # The claims arrive sealed under the replicas' session key (authenticated
                # encryption): only expiry can have changed since they were issued.
                return self.tokens.check_expiry(session.token_claims)
            except KbsError:
                if not bearer:
                    raise
        if bearer:
            return self.tokens.verify(bearer)
        raise TokenInvalid("no attested session cookie and no Bearer attestation token")

    async def _read(self, path: str) -> bytes | None:
        try:
            return await self.store.get(path)
        except ResourceStoreError as exc:
            raise AuditUnavailable(f"the resource store failed: {exc.message}") from exc

    async def _tee_decision(self, claims: dict[str, Any], path: str) -> ResourceDecision | None:
        """A denial when ``path`` is a workload's and the token's TEE fails its registered requirements."""
        workload = path_workload(path)
        if workload is None:
            return None
        record = await self._read(requirements_path(workload))
        return tee_decision(record, claims, installation_allows_emulated=self.allow_emulated, workload_id=workload)

    async def release(self, path: str, *, session_id: str | None, bearer: str | None) -> FlattenedJwe:
        """The resource at ``path`` as a JWE to the attested TEE key.

        Stores ``key.released`` or ``key.denied`` first. Raises :class:`InvalidResourcePath`,
        :class:`SessionMissing`, :class:`TokenInvalid`, :class:`PolicyDenied`,
        :class:`ResourceNotFound` or :class:`AuditUnavailable`.
        """
        request_id = uuid.uuid4().hex
        claims: dict[str, Any] | None = None
        thumbprint: str | None = None
        decision: ResourceDecision | None = None
        session = self.sessions.peek(session_id)
        node = session.node_id if session else None
        workload = path_workload(path) or (session.workload_id if session else None)
        try:
            check_resource_path(path)
            claims = self._claims(session_id, bearer, session)
            workload = path_workload(path) or (claims.get("ccpipe") or {}).get("workload_id")
            jwk = tee_pubkey_of(claims)
            thumbprint = tee_pubkey_thumbprint(jwk)
            pubkey = import_tee_pubkey(jwk)
            # ccpipe's own rules first, in code (no resource policy can drop them): the token's
            # workload, then that workload's TEE requirements; only then the resource policies.
            decision = workload_decision(claims, path) or await self._tee_decision(claims, path)
            if decision is None:
                decision = (self.policies.decide(claims, path) if self.inline_decisions
                            else await asyncio.to_thread(self.policies.decide, claims, path))
            if not decision.allowed:
                raise PolicyDenied("the resource policy does not allow this resource for this attestation")
            data = await self._read(path)
            if data is None:
                raise ResourceNotFound(f"resource {path} not found")
            jwe = FlattenedJwe(**jose.encrypt_flattened(data, pubkey))
        except KbsError as exc:
            if isinstance(exc, PolicyDenied) and decision is not None:
                rule, why = decision.rule, decision.reason
                reason = exc.reason("kbs").model_copy(update={"message": f"{exc.message}: {why}"})
            else:
                rule, reason = None, exc.reason("kbs")
            await self.events.key_denied(
                workload_id=workload, resource=path, reason=reason, token=claims, thumbprint=thumbprint,
                node_id=node, policy_id=decision.policy_id if decision else None, rule=rule, request_id=request_id)
            raise
        assert claims is not None and thumbprint is not None and decision is not None
        await self.events.key_released(
            workload_id=workload, resource=path, token=claims, thumbprint=thumbprint, policy_id=decision.policy_id,
            rule=decision.rule, request_id=request_id)
        return jwe
