"""Admin client of the KBS (the sign stage registers image keys and reference values with it).

Every call mints a short-lived EdDSA admin JWT with the configured role. Refusals raise
:class:`~ccpipe.stages.attest.kbs.errors.KbsRefused`; an unreachable KBS raises
:class:`~ccpipe.stages.attest.kbs.errors.KbsUnavailable` (retryable).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.stages.attest.kbs.admin_auth import load_admin_private_key, mint_admin_token
from ccpipe.stages.attest.kbs.errors import KbsRefused, KbsUnavailable
from ccpipe.stages.attest.kbs.store import check_resource_path


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


class KbsAdminClient:
    """``KbsAdminClient(base_url, admin_key, role="admin")``; ``admin_key`` = key or PEM path."""

    def __init__(self, base_url: str, admin_key: Ed25519PrivateKey | Path | str, *, role: str = "admin",
                 timeout_s: float = 10.0, kid: str | None = None) -> None:
        """Sign admin tokens with ``admin_key`` (``<data_dir>/keys/kbs/admin.key``) for ``role``; with
        ``kid``, ``admin_key`` is the enrolled key of that id (the sign stage's, role ``sign-stage``)."""
        self.base_url = base_url.rstrip("/")
        self._key = admin_key if isinstance(admin_key, Ed25519PrivateKey) else load_admin_private_key(Path(admin_key))
        self.role = role
        self.kid = kid
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _request(self, method: str, path: str, *, data: bytes | None = None,
                       params: dict[str, str] | None = None) -> bytes:
        headers = {"Authorization": f"Bearer {mint_admin_token(self._key, self.role, kid=self.kid)}"}
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as http, http.request(
                method, f"{self.base_url}/kbs/v0/{path}", data=data, headers=headers, params=params
            ) as resp:
                body, status = await resp.read(), resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KbsUnavailable(f"KBS admin API at {self.base_url} did not answer: {exc!r}") from exc
        if status == 200:
            return body
        try:
            info = json.loads(body)
            error_type, detail = str(info["type"]), str(info["detail"])
        except (ValueError, KeyError, TypeError):
            error_type, detail = "unknown", body[:200].decode(errors="replace")
        if status >= 500:
            raise KbsUnavailable(f"KBS admin {method} {path} answered {status}: {detail}")
        raise KbsRefused(f"KBS admin refused {method} {path} ({status}): {detail}", status=status,
                         error_type=error_type)

    async def set_resource(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``<repository>/<type>/<tag>`` (e.g. ``ccpipe/<wl>/image-key``)."""
        check_resource_path(path)
        await self._request("PUT", f"resource/{path}", data=data)

    async def delete_resource(self, path: str) -> None:
        """Delete the resource at ``path``."""
        check_resource_path(path)
        await self._request("DELETE", f"resource/{path}")

    async def set_reference_values(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        """Register an RVPS ``sample`` message (optionally scoped to a workload); returns the names stored."""
        out = await self._request("POST", "reference-value", data=json.dumps(message).encode(),
                                  params={"scope": scope} if scope else None)
        return list(json.loads(out))

    async def set_policy(self, policy: str, *, kind: str = "resource", policy_id: str = "default",
                         prefix: str | None = None) -> dict[str, str]:
        """Set a Rego policy: ``kind="resource"`` (optionally scoped to ``prefix``) or ``"attestation"``."""
        if kind == "attestation":
            body: dict[str, Any] = {"type": "rego", "policy_id": policy_id, "policy": _b64url(policy)}
            out = await self._request("POST", "attestation-policy", data=json.dumps(body).encode())
        else:
            body = {"policy": _b64url(policy), **({"prefix": prefix} if prefix else {})}
            out = await self._request("POST", "resource-policy", data=json.dumps(body).encode())
        return dict(json.loads(out))
