"""What the KBS needs from the attestation service besides appraisal: reference values and policies.

Protocols only; :mod:`ccpipe.stages.attest.kbs.attestation` implements them over the service.
"""

from __future__ import annotations

from typing import Any, Protocol

from ccpipe.stages.attest.kbs.release import ResourceDecision


class References(Protocol):
    """Reference values by (scope, name); scope = workload id."""

    def register(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        """Register an RVPS ``sample`` message; raises ``AdminBodyInvalid``."""
        ...

    def get(self, scope: str | None, name: str) -> list[Any]:
        """Live values of ``name`` visible to ``scope``."""
        ...

    def scoped(self, scope: str, name: str) -> list[Any]:
        """Live values of ``name`` for ``scope``."""
        ...

    def check(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        """The names ``message`` would register; raises ``AdminBodyInvalid`` (nothing stored)."""
        ...


class Policies(Protocol):
    """Resource decisions and policy administration."""

    def decide(self, claims: dict[str, Any], path: str) -> ResourceDecision:
        """May the holder of ``claims`` have ``path``?"""
        ...

    def set_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        """Store a resource policy; raises ``AdminBodyInvalid``."""
        ...

    def set_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        """Store an attestation policy; raises ``AdminBodyInvalid``."""
        ...

    def ids(self) -> list[str]:
        """Ids of the stored resource policies."""
        ...

    def check_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        """The id and digest :meth:`set_resource_policy` would keep; raises ``AdminBodyInvalid`` (nothing stored)."""
        ...

    def check_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        """The id and digest :meth:`set_attestation_policy` would keep; raises ``AdminBodyInvalid``."""
        ...
