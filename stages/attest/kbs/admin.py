"""The KBS admin operations (set resource, policies, reference values), behind admin JWTs.

Transport-independent: takes the ``Authorization`` header, the path and the body; the HTTP
adapter calls it for every admin route. Policies and reference values go to the attestation
service's stores (through :mod:`.ports`), resources to the sealed resource store.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from schemas.kbs import AttestationPolicyBody, ReferenceValueMessage, ResourcePolicyBody
from stages.attest.kbs.admin_auth import AdminAuthenticator
from stages.attest.kbs.core import parse_body
from stages.attest.kbs.errors import AdminBodyInvalid, ResourceNotFound
from stages.attest.kbs.ports import Policies, References
from stages.attest.kbs.store import ResourceStore


def _b64url_text(value: str, what: str) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError) as exc:
        raise AdminBodyInvalid(f"{what} must be base64url (no padding) of UTF-8 Rego text") from exc


@dataclass
class KbsAdmin:
    """Admin endpoints: each call is authorised for its path first."""

    auth: AdminAuthenticator
    store: ResourceStore
    policies: Policies
    references: References

    async def set_resource(self, authorization: str | None, path: str, data: bytes) -> None:
        """``PUT|POST /kbs/v0/resource/<path>``: store ``data`` (sealed)."""
        self.auth.authorize(authorization, f"/kbs/v0/resource/{path}")
        await self.store.set(path, data)

    async def delete_resource(self, authorization: str | None, path: str) -> None:
        """``DELETE /kbs/v0/resource/<path>``; raises :class:`ResourceNotFound` if absent."""
        self.auth.authorize(authorization, f"/kbs/v0/resource/{path}")
        if not await self.store.delete(path):
            raise ResourceNotFound(f"resource {path} not found")

    def set_attestation_policy(self, authorization: str | None, body: bytes) -> dict[str, str]:
        """``POST /kbs/v0/attestation-policy``; returns the id and digest kept."""
        self.auth.authorize(authorization, "/kbs/v0/attestation-policy")
        msg = parse_body(AttestationPolicyBody, body, "attestation-policy")
        return self.policies.set_attestation_policy(msg.policy_id, _b64url_text(msg.policy, "policy"))

    def set_resource_policy(self, authorization: str | None, body: bytes) -> dict[str, str]:
        """``POST /kbs/v0/resource-policy``: evaluate once, then keep it for its prefix."""
        self.auth.authorize(authorization, "/kbs/v0/resource-policy")
        msg = parse_body(ResourcePolicyBody, body, "resource-policy")
        return self.policies.set_resource_policy(_b64url_text(msg.policy, "policy"), msg.prefix, msg.policy_id)

    def list_resource_policies(self, authorization: str | None) -> list[str]:
        """``GET /kbs/v0/resource-policy``: ids of the stored resource policies."""
        self.auth.authorize(authorization, "/kbs/v0/resource-policy")
        return self.policies.ids()

    def set_reference_values(self, authorization: str | None, body: bytes, scope: str | None) -> list[str]:
        """``POST /kbs/v0/reference-value[?scope=<workload>]``: register an RVPS message."""
        self.auth.authorize(authorization, "/kbs/v0/reference-value")
        msg = parse_body(ReferenceValueMessage, body, "reference-value")
        return self.references.register(msg.model_dump(), scope=scope)

    def get_reference_value(self, authorization: str | None, name: str, scope: str | None) -> list[Any]:
        """``GET /kbs/v0/reference-value/<name>[?scope=]``: live values."""
        self.auth.authorize(authorization, f"/kbs/v0/reference-value/{name}")
        return self.references.get(scope, name)


def to_json(value: Any) -> bytes:
    """Compact JSON bytes of an admin answer."""
    return json.dumps(value, separators=(",", ":")).encode()
