"""Registering what the sign stage made with the KBS: image keys, the cosign key, reference values.

:class:`KbsRegistrar` is the narrow interface the sign stage needs. The KBS's admin client
(``ccpipe.stages.attest.kbs.admin_client.KbsAdminClient``) implements it; :class:`LazyAdminRegistrar`
makes one on first use. Where the admin enrolled the sign stage's key (every installation with an
admin key), its tokens are signed with that key, role ``sign-stage``: the sign host needs no
KBS admin key, and its credential can register resources and reference values and nothing else.
Elsewhere (a bare data directory shared with the KBS) the KBS admin key
``<data_dir>/keys/kbs/admin.key`` signs them. A KBS that does not answer raises
``KbsUnavailable`` (a ``TransientError``: the stage retries); a refusal the KBS states raises ``KbsRefused`` (final).

The image key goes from memory to the admin request body and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ccpipe.pipeline.event_signature import load_or_create_component_key
from ccpipe.pipeline.signing import enrolled_mode
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.attest.kbs.admin_auth import SIGN_STAGE_ROLE
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient


class KbsRegistrar(Protocol):
    """Where the sign stage registers keys and reference values (the KBS's admin API)."""

    async def set_resource(self, path: str, data: bytes) -> None:
        """Store ``data`` as the resource ``<repo>/<type>/<tag>``."""
        ...

    async def set_reference_values(self, message: dict[str, Any]) -> Any:
        """Register reference values given as Trustee's RVPS ``sample`` message."""
        ...


def admin_key_path(data_dir: Path) -> Path:
    """The KBS admin private key (Ed25519 PEM) the embedded KBS creates: ``<data_dir>/keys/kbs/admin.key``."""
    return data_dir / "keys" / "kbs" / "admin.key"


class LazyAdminRegistrar:
    """A :class:`KbsRegistrar` that opens ``KbsAdminClient(base_url, admin key)`` on first use.

    The admin key is read then, not when the stage is declared: the KBS creates it when it
    first starts, which may be after the stages are assembled.
    """

    def __init__(self, base_url: str, data_dir: Path) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self._client: KbsAdminClient | None = None

    def client(self) -> KbsAdminClient:
        """The admin client; raises :class:`ConfigurationError` when the admin key cannot be read."""
        if self._client is None and enrolled_mode(self.data_dir):
            own = load_or_create_component_key(self.data_dir, "sign")
            self._client = KbsAdminClient(self.base_url, own.private_key, role=SIGN_STAGE_ROLE, kid=own.key_id)
        if self._client is None:
            path = admin_key_path(self.data_dir)
            try:
                self._client = KbsAdminClient(self.base_url, path)
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"the KBS admin key {path} cannot be read",
                    hint="start the KBS once (ccpipe up) so it creates its admin key, or copy it there",
                    code="sign.kbs.admin_key",
                ) from exc
        return self._client

    async def set_resource(self, path: str, data: bytes) -> None:
        """Store a resource through the admin API."""
        await self.client().set_resource(path, data)

    async def set_reference_values(self, message: Mapping[str, Any]) -> list[str]:
        """Register reference values through the admin API; returns the names stored."""
        return await self.client().set_reference_values(dict(message))
