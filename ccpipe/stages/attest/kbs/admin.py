"""The KBS admin operations (set resource, policies, reference values), behind admin JWTs;
each change is a ``kbs.admin.changed`` event before it is made.

Transport-independent: takes the ``Authorization`` header, the path and the body; the HTTP
adapter calls it for every admin route. Policies and reference values go to the attestation
service's stores (through :mod:`.ports`), resources to the sealed resource store.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any

from ccpipe.schemas.kbs import AttestationPolicyBody, ReferenceValueMessage, ResourcePolicyBody
from ccpipe.stages.attest.kbs.admin_auth import AdminAuthenticator
from ccpipe.stages.attest.kbs.audit import AuditEvents
from ccpipe.stages.attest.kbs.core import parse_body
from ccpipe.stages.attest.kbs.errors import AdminBodyInvalid, ResourceNotFound
from ccpipe.stages.attest.kbs.ports import Policies, References
from ccpipe.stages.attest.kbs.store import MAX_RESOURCE_BYTES, ResourceStore, check_resource_path


def _b64url_text(value: str, what: str) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError) as exc:
        raise AdminBodyInvalid(f"{what} must be base64url (no padding) of UTF-8 Rego text") from exc


@dataclass
class KbsAdmin:
    """Admin endpoints: each call is authorised for its path first.

    Every change is checked completely, then stored as a ``kbs.admin.changed`` event, and only
    then made: a change the trail does not know about cannot happen (if the event cannot be
    stored the answer is 503 and nothing changed), and a refused change leaves no event.
    """

    auth: AdminAuthenticator
    store: ResourceStore
    policies: Policies
    references: References
    events: AuditEvents | None = None

    async def _record(self, claims: dict[str, Any], action: str, target: str, detail: dict[str, str]) -> None:
        if self.events is not None:
            await self.events.admin_changed(action=action, target=target, claims=claims, detail=detail,
                                            request_id=uuid.uuid4().hex)

    async def set_resource(self, authorization: str | None, path: str, data: bytes) -> None:
        """``PUT|POST /kbs/v0/resource/<path>``: store ``data`` (sealed)."""
        claims = self.auth.authorize(authorization, f"/kbs/v0/resource/{path}")
        check_resource_path(path)
        if len(data) > MAX_RESOURCE_BYTES:
            raise AdminBodyInvalid(f"resource of {len(data)} bytes exceeds {MAX_RESOURCE_BYTES}")
        await self._record(claims, "resource.set", path, {"size": str(len(data))})
        await self.store.set(path, data)

    async def delete_resource(self, authorization: str | None, path: str) -> None:
        """``DELETE /kbs/v0/resource/<path>``; raises :class:`ResourceNotFound` if absent."""
        claims = self.auth.authorize(authorization, f"/kbs/v0/resource/{path}")
        if await self.store.get(path) is None:
            raise ResourceNotFound(f"resource {path} not found")
        await self._record(claims, "resource.deleted", path, {})
        await self.store.delete(path)

    async def set_attestation_policy(self, authorization: str | None, body: bytes) -> dict[str, str]:
        """``POST /kbs/v0/attestation-policy``; returns the id and digest kept."""
        claims = self.auth.authorize(authorization, "/kbs/v0/attestation-policy")
        msg = parse_body(AttestationPolicyBody, body, "attestation-policy")
        text = _b64url_text(msg.policy, "policy")
        kept = self.policies.check_attestation_policy(msg.policy_id, text)
        await self._record(claims, "attestation-policy.set", kept["policy_id"], kept)
        return self.policies.set_attestation_policy(msg.policy_id, text)

    async def set_resource_policy(self, authorization: str | None, body: bytes) -> dict[str, str]:
        """``POST /kbs/v0/resource-policy``: evaluate once, then keep it for its prefix."""
        claims = self.auth.authorize(authorization, "/kbs/v0/resource-policy")
        msg = parse_body(ResourcePolicyBody, body, "resource-policy")
        text = _b64url_text(msg.policy, "policy")
        kept = self.policies.check_resource_policy(text, msg.prefix, msg.policy_id)
        detail = {**kept, "prefix": msg.prefix} if msg.prefix else kept
        await self._record(claims, "resource-policy.set", kept["policy_id"], detail)
        return self.policies.set_resource_policy(text, msg.prefix, msg.policy_id)

    def list_resource_policies(self, authorization: str | None) -> list[str]:
        """``GET /kbs/v0/resource-policy``: ids of the stored resource policies."""
        self.auth.authorize(authorization, "/kbs/v0/resource-policy")
        return self.policies.ids()

    async def set_reference_values(self, authorization: str | None, body: bytes, scope: str | None) -> list[str]:
        """``POST /kbs/v0/reference-value[?scope=<workload>]``: register an RVPS message."""
        claims = self.auth.authorize(authorization, "/kbs/v0/reference-value")
        msg = parse_body(ReferenceValueMessage, body, "reference-value").model_dump()
        names = self.references.check(msg, scope=scope)
        await self._record(claims, "reference-values.set", scope or "(global)", {"names": ",".join(names)[:2000]})
        return self.references.register(msg, scope=scope)

    def get_reference_value(self, authorization: str | None, name: str, scope: str | None) -> list[Any]:
        """``GET /kbs/v0/reference-value/<name>[?scope=]``: live values."""
        self.auth.authorize(authorization, f"/kbs/v0/reference-value/{name}")
        return self.references.get(scope, name)


def to_json(value: Any) -> bytes:
    """Compact JSON bytes of an admin answer."""
    return json.dumps(value, separators=(",", ":")).encode()
