"""What a policy is: its kind, id, Rego text, digest and (resource policies) scope — and the
policies shipped in ``stages/attest/policies/``, served until an operator sets their id."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Literal

PolicyKind = Literal["attestation", "resource"]
BUILTIN_POLICIES: dict[tuple[PolicyKind, str], str] = {
    ("attestation", "default"): "attestation_default.rego",
    ("resource", "default"): "resource_default.rego",
}
"""Policies shipped in ``stages/attest/policies/``, served until an operator sets their id."""


def policy_digest(text: str) -> str:
    """``sha256:<hex>`` of the policy's UTF-8 text: what events and tokens record."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def builtin_policy_text(kind: PolicyKind, policy_id: str) -> str | None:
    """The text of a shipped policy, or None."""
    name = BUILTIN_POLICIES.get((kind, policy_id))
    if name is None:
        return None
    return resources.files("ccpipe.stages.attest.policies").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class StoredPolicy:
    """A policy as stored: id, kind, Rego text, its digest and (resource policies) its scope."""

    policy_id: str
    kind: PolicyKind
    text: str
    scope: str | None = None

    @functools.cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the text (computed once per object)."""
        return policy_digest(self.text)


@functools.cache
def builtin_policy(kind: PolicyKind, policy_id: str) -> StoredPolicy | None:
    """The shipped policy as one object (its digest is then computed once), or None."""
    text = builtin_policy_text(kind, policy_id)
    return StoredPolicy(policy_id, kind, text) if text is not None else None


__all__ = ["BUILTIN_POLICIES", "PolicyKind", "StoredPolicy", "builtin_policy", "builtin_policy_text", "policy_digest"]
