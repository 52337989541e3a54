"""Policy storage: policies by (kind, id), checked before they are stored, the shipped defaults
as fallback, resource policies scoped to path prefixes — and the resource decision over a store.

Resource policies may be **scoped** to a path prefix (``repo/type``): every scoped policy whose
prefix matches the requested path must allow as well as the policy the caller names (so one
admin can own a subtree of secrets; Trustee #1112).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from ccpipe.stages.attest.errors import PolicyInvalid, PolicyNotFound
from ccpipe.stages.attest.policy_eval import (
    CompiledAttestationPolicy,
    ResourceDecision,
    check_resource_policy,
    evaluate_one_resource_policy,
)
from ccpipe.stages.attest.policy_text import PolicyKind, StoredPolicy, builtin_policy
from ccpipe.stages.attest.rvps import atomic_write
from ccpipe.stages.attest.stat_cache import FileCache, ListingCache


def scope_matches(scope: str | None, resource_path: str) -> bool:
    """Whether a resource policy scoped to ``scope`` (a path prefix by segments) covers the path."""
    if not scope:
        return False
    want = [p for p in scope.strip("/").split("/") if p]
    have = [p for p in resource_path.strip("/").split("/") if p]
    return have[: len(want)] == want


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _checked(kind: str, policy_id: str, scope: str | None) -> None:
    if kind not in ("attestation", "resource"):
        raise PolicyInvalid(f"policy kind {kind!r} is neither 'attestation' nor 'resource'")
    if not _ID.match(policy_id):
        raise PolicyInvalid(f"policy id {policy_id!r} must match {_ID.pattern}")
    if scope is not None and (kind != "resource" or not scope.strip("/")):
        raise PolicyInvalid("only resource policies have a scope, and it must be a non-empty path prefix")


class PolicyStore:
    """Policies by (kind, id): set (checked first), get (shipped defaults as fallback), list.

    This base keeps them in memory; :class:`FilePolicyStore` persists them. A policy is checked
    once per text digest; its compiled engine lives in the shared, bounded engine cache
    (:mod:`ccpipe.stages.attest.rego_engine`), so a changed policy is recompiled.
    """

    def __init__(self) -> None:
        """An empty store (the shipped defaults are still served)."""
        self._mem: dict[tuple[str, str], StoredPolicy] = {}
        self._lock = threading.Lock()
        self._compiled: dict[str, CompiledAttestationPolicy] = {}

    # storage hooks ------------------------------------------------------------------------
    def _save(self, policy: StoredPolicy) -> None:
        with self._lock:
            self._mem[(policy.kind, policy.policy_id)] = policy

    def _load(self, kind: PolicyKind, policy_id: str) -> StoredPolicy | None:
        return self._mem.get((kind, policy_id))

    def _all(self, kind: PolicyKind) -> list[StoredPolicy]:
        return [p for (k, _), p in sorted(self._mem.items()) if k == kind]

    # API ----------------------------------------------------------------------------------
    def set_policy(
        self, policy_id: str, text: str, *, kind: PolicyKind = "attestation", scope: str | None = None
    ) -> StoredPolicy:
        """Check and store a policy; return it (with its digest).

        Raises :class:`PolicyInvalid` for a bad id, kind or scope, or Rego that does not
        compile/evaluate — the previous policy of that id then stays in force.
        """
        policy = self.check_policy(policy_id, text, kind=kind, scope=scope)
        self._save(policy)
        return policy

    def check_policy(
        self, policy_id: str, text: str, *, kind: PolicyKind = "attestation", scope: str | None = None
    ) -> StoredPolicy:
        """The policy :meth:`set_policy` would store, checked but not stored.

        Raises :class:`PolicyInvalid` like :meth:`set_policy`.
        """
        _checked(kind, policy_id, scope)
        policy = StoredPolicy(policy_id, kind, text, scope.strip("/") if scope else None)
        if kind == "attestation":
            if policy.digest not in self._compiled:
                self._compiled[policy.digest] = CompiledAttestationPolicy(policy)
        else:
            check_resource_policy(policy)
        return policy

    def get_policy(self, policy_id: str, *, kind: PolicyKind = "attestation") -> StoredPolicy:
        """The stored policy, else the shipped one; raises :class:`PolicyNotFound`."""
        if _ID.match(policy_id):
            stored = self._load(kind, policy_id)
            if stored is not None:
                return stored
            builtin = builtin_policy(kind, policy_id)
            if builtin is not None:
                return builtin
        raise PolicyNotFound(f"no {kind} policy with id {policy_id!r}")

    def list_policies(self, kind: PolicyKind) -> list[StoredPolicy]:
        """Every stored policy of ``kind`` (shipped defaults not included)."""
        return self._all(kind)

    def compiled_attestation_policy(self, policy_id: str) -> CompiledAttestationPolicy:
        """The compiled attestation policy for ``policy_id``.

        Trustee's AS evaluates ``<id>_cpu`` for CPU evidence, so an operator who sets
        ``default_cpu`` (as Trustee's documentation tells them) replaces ``default``.
        Raises :class:`PolicyNotFound` or :class:`PolicyInvalid`.
        """
        try:
            policy = self.get_policy(f"{policy_id}_cpu")
        except PolicyNotFound:
            policy = self.get_policy(policy_id)
        compiled = self._compiled.get(policy.digest)
        if compiled is None:
            compiled = self._compiled[policy.digest] = CompiledAttestationPolicy(policy)
        return compiled


class FilePolicyStore(PolicyStore):
    """Policies as ``<dir>/<kind>/<id>.json`` (``{"policy_id","kind","scope","text"}``), written
    atomically, so processes sharing the directory agree. Look-ups reuse what was parsed while
    ``stat`` shows the same file and directory versions (:mod:`ccpipe.stages.attest.stat_cache`): a
    policy another process set is seen at the next look-up."""

    def __init__(self, directory: Path) -> None:
        """A store under ``directory`` (created on first write)."""
        super().__init__()
        self.directory = Path(directory)
        self._root = os.fspath(self.directory)
        self._files: FileCache[StoredPolicy] = FileCache(lambda path, data: self._parse(Path(path), data))
        self._listings = ListingCache(".json")

    def _save(self, policy: StoredPolicy) -> None:
        doc = {"policy_id": policy.policy_id, "kind": policy.kind, "scope": policy.scope, "text": policy.text}
        atomic_write(self.directory / policy.kind / f"{policy.policy_id}.json", json.dumps(doc).encode())

    @staticmethod
    def _parse(path: Path, data: bytes | None = None) -> StoredPolicy:
        try:
            doc = json.loads(path.read_bytes() if data is None else data)
            return StoredPolicy(str(doc["policy_id"]), doc["kind"], str(doc["text"]), doc.get("scope"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PolicyInvalid(f"stored policy {path} cannot be read: {exc}") from exc

    def _read(self, path: str) -> StoredPolicy | None:
        try:
            return self._files.get(path)
        except OSError as exc:
            raise PolicyInvalid(f"stored policy {path} cannot be read: {exc}") from exc

    def _load(self, kind: PolicyKind, policy_id: str) -> StoredPolicy | None:
        # kind is one of two literals and policy_id matched _ID: a plain join stays inside.
        return self._read(os.path.join(self._root, kind, f"{policy_id}.json"))

    def _all(self, kind: PolicyKind) -> list[StoredPolicy]:
        d = os.path.join(self._root, kind)
        try:
            stems = self._listings.stems(d)
        except OSError as exc:
            raise PolicyInvalid(f"stored policies {d} cannot be listed: {exc}") from exc
        found = (self._read(os.path.join(d, f"{stem}.json")) for stem in stems)
        return [p for p in found if p is not None]


def evaluate_resource_policy(
    store: PolicyStore,
    policy_id: str,
    ear_claims: dict[str, Any],
    resource_path: str,
    *,
    plugin: str = "resource",
    query: dict[str, str] | None = None,
) -> ResourceDecision:
    """Decide a resource request: the named policy and every scoped policy covering the path.

    All must allow; the first denial is returned (its ``rule`` is ``<policy id>:<rule>``).
    ``ear_claims`` are the claims of an already verified EAR token. Raises
    :class:`PolicyNotFound` for an unknown ``policy_id`` and :class:`PolicyInvalid` for a
    policy that does not evaluate; never for a denial.
    """
    policies = [store.get_policy(policy_id, kind="resource")]
    policies += [
        p for p in store.list_policies("resource") if p.policy_id != policy_id and scope_matches(p.scope, resource_path)
    ]
    ids = tuple(p.policy_id for p in policies)
    digests = tuple(p.digest for p in policies)
    for policy in policies:
        decision = evaluate_one_resource_policy(policy, ear_claims, resource_path, plugin=plugin, query=query)
        if not decision.allowed:
            return ResourceDecision(False, decision.rule, decision.reason, ids, digests)
    return ResourceDecision(True, "allow", f"allowed by {', '.join(ids)}", ids, digests)


__all__ = [
    "FilePolicyStore",
    "PolicyStore",
    "evaluate_resource_policy",
    "scope_matches",
]
