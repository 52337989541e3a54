"""Registering what the sign stage made with the KBS: image keys, the cosign key, reference values.

:class:`KbsRegistrar` is the narrow interface the sign stage needs; :class:`AdminClientRegistrar`
implements it over the KBS's admin API client (``stages.attest.kbs.admin_client.KbsAdminClient``,
authenticated with the EdDSA admin key under ``<data_dir>/keys/kbs/``). A KBS that does not
answer is a :class:`KbsUnreachable` (transient: the stage retries); a refusal the KBS states is
its own ``CcpipeError`` and final.

The image key goes from memory to the admin request body and nowhere else.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives import serialization

from schemas.errors import CcpipeError, ConfigurationError, TransientError


class KbsUnreachable(TransientError):
    """The KBS admin API did not answer (connection refused, timeout, 5xx)."""

    code = "sign.kbs.unreachable"
    default_hint = "the step is retried; check that the KBS runs (ccpipe endpoints) and CCPIPE_KBS_URL"


class KbsRegistrar(Protocol):
    """Where the sign stage registers keys and reference values (the KBS's admin API)."""

    async def set_resource(self, path: str, data: bytes) -> None:
        """Store ``data`` as the resource ``<repo>/<type>/<tag>``."""
        ...

    async def set_reference_values(self, message: Mapping[str, str]) -> None:
        """Register reference values given as Trustee's RVPS message."""
        ...


def admin_key_path(data_dir: Path) -> Path:
    """The KBS admin private key (Ed25519 PEM) the embedded KBS creates: ``<data_dir>/keys/kbs/admin.key``."""
    return data_dir / "keys" / "kbs" / "admin.key"


def load_admin_key(data_dir: Path) -> Any:
    """The KBS admin private key; raises :class:`ConfigurationError` when it is missing or unreadable."""
    path = admin_key_path(data_dir)
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"the KBS admin key {path} cannot be read",
            hint="start the KBS once (ccpipe up) so it creates its admin key, or copy it there",
            code="sign.kbs.admin_key",
        ) from exc


async def _settle(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class AdminClientRegistrar:
    """:class:`KbsRegistrar` over ``KbsAdminClient(base_url, admin_key)``, made on first use."""

    def __init__(self, base_url: str, data_dir: Path, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.timeout_s = timeout_s
        self._client: Any = None

    def _admin_client(self) -> Any:
        if self._client is None:
            module = importlib.import_module("stages.attest.kbs.admin_client")
            self._client = module.KbsAdminClient(self.base_url, load_admin_key(self.data_dir))
        return self._client

    async def _call(self, what: str, method: str, *args: Any) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                # the client may be synchronous or asynchronous: a sync call runs in a thread
                fn = getattr(self._admin_client(), method)
                if inspect.iscoroutinefunction(fn):
                    await fn(*args)
                else:
                    await _settle(await asyncio.to_thread(fn, *args))
        except CcpipeError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KbsUnreachable(f"the KBS at {self.base_url} did not take {what}: {exc!r}") from exc

    async def set_resource(self, path: str, data: bytes) -> None:
        """Store a resource through the admin API."""
        await self._call(f"resource {path}", "set_resource", path, data)

    async def set_reference_values(self, message: Mapping[str, str]) -> None:
        """Register reference values through the admin API."""
        await self._call("reference values", "set_reference_values", dict(message))
