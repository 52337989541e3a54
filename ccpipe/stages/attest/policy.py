"""Rego policies: the attestation policy (claims → AR4SI trust vector) and resource policies
(EAR claims + resource path → release or not), evaluated with ``regopy`` (rego-cpp).

Contracts are Trustee's, so Trustee's own policies run unchanged:

* attestation policy — ``package policy``; ``input`` = verifier claims under the TEE name plus
  ``init_data``/``report_data``; the host function ``query_reference_value(name)`` returns the
  reference values; the rule ``data.policy.trust_claims`` is the vector. regopy cannot register
  host functions, so a second module defines ``query_reference_value`` over a reserved input
  key (:data:`REFERENCE_INPUT_KEY`) that the engine fills per evaluation — the compiled policy
  is then reused for every appraisal (a bundle query costs well under a millisecond);
* resource policy — ``package policy``, rule ``data.policy.allow``; ``input`` = EAR token
  claims, ``data`` = ``{"plugin", "resource-path", "query"}``. A policy may also define a set
  ``violations`` of ``"<rule>: <why>"`` strings; a denial then names the first of them
  (Trustee only says "denied"). Policies without ``violations`` are named by ``allow``.

Resource policies may be **scoped** to a path prefix (``repo/type``): every scoped policy whose
prefix matches the requested path must allow as well as the policy the caller names (so one
admin can own a subtree of secrets; Trustee #1112).

Decisions are memoised (:mod:`ccpipe.stages.attest.policy_memo`) on the part of the input a policy
can read, found from its text (:mod:`ccpipe.stages.attest.policy_reads`): the shipped policies read
claims by name and never a nonce, so every handshake of a workload after the first reuses the
decision. A policy whose reads cannot be bounded, or that calls a clock or the network, is
evaluated every time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import regopy

from ccpipe.stages.attest.errors import PolicyEvaluationFailed, PolicyInvalid, PolicyNotFound
from ccpipe.stages.attest.policy_memo import DECISIONS, DecisionKeys
from ccpipe.stages.attest.rego_input import rego_input
from ccpipe.stages.attest.rvps import atomic_write
from ccpipe.stages.attest.stat_cache import FileCache, ListingCache

PolicyKind = Literal["attestation", "resource"]
REFERENCE_INPUT_KEY = "ccpipe-reference-values"
_REFERENCE_MODULE = (
    "package policy\n\nimport rego.v1\n\n"
    f'query_reference_value(name) := input["{REFERENCE_INPUT_KEY}"][name]\n'
)
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
def _builtin_policy(kind: PolicyKind, policy_id: str) -> StoredPolicy | None:
    """The shipped policy as one object (its digest is then computed once)."""
    text = builtin_policy_text(kind, policy_id)
    return StoredPolicy(policy_id, kind, text) if text is not None else None


@dataclass(frozen=True)
class ResourceDecision:
    """A resource policy's verdict; ``rule`` names the rule that failed (or ``allow``)."""

    allowed: bool
    rule: str
    reason: str
    policy_ids: tuple[str, ...] = ()
    policy_digests: tuple[str, ...] = ()


def _output(out: str, what: str) -> Any:
    """The first expression of a regopy result's text; raises :class:`PolicyEvaluationFailed`."""
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise PolicyEvaluationFailed(f"the Rego engine failed on {what}: {out[:200]}") from exc
    exprs = data.get("expressions") if isinstance(data, dict) else None
    if not exprs:
        return None
    return exprs[0]


class CompiledAttestationPolicy:
    """An attestation policy compiled once; :meth:`trust_vector` evaluates it per appraisal."""

    def __init__(self, policy: StoredPolicy) -> None:
        """Compile ``policy``; raises :class:`PolicyInvalid` if it does not parse or produce
        ``trust_claims`` on an empty input."""
        self.policy = policy
        self._lock = threading.Lock()
        self.decisions = DecisionKeys("attestation", (policy.text, _REFERENCE_MODULE))
        try:
            self._interp = regopy.Interpreter()
            self._interp.add_module("policy.rego", policy.text)
            self._interp.add_module("ccpipe_reference.rego", _REFERENCE_MODULE)
            self._bundle = self._interp.build("data.policy.trust_claims")
            ok = self._bundle.ok()
        except Exception as exc:  # regopy raises plain exceptions for parse errors
            raise PolicyInvalid(f"attestation policy {policy.policy_id!r} does not compile: {exc}") from exc
        if not ok:
            raise PolicyInvalid(f"attestation policy {policy.policy_id!r} does not compile")
        try:
            self.trust_vector({}, {})
        except PolicyEvaluationFailed as exc:
            raise PolicyInvalid(f"attestation policy {policy.policy_id!r}: {exc.message}") from exc

    def trust_vector(self, policy_input: dict[str, Any], reference: dict[str, list[Any]]) -> dict[str, int]:
        """The AR4SI vector for ``policy_input`` with ``reference`` values.

        Raises :class:`PolicyEvaluationFailed` if the engine fails or ``trust_claims`` is not an
        object of integers. The decision for an input is memoised on the claims the policy reads
        (:mod:`ccpipe.stages.attest.policy_memo`), when that set can be bounded.
        """
        doc = {**policy_input, REFERENCE_INPUT_KEY: reference}
        what = f"attestation policy {self.policy.policy_id!r}"
        key = self.decisions.key(doc)
        out = DECISIONS.get(key) if key is not None else None
        if out is None:
            with self._lock:
                try:
                    # An Input built from Python values costs a quarter of parsing JSON text.
                    self._interp.set_input(rego_input(doc))
                    out = str(self._interp.query_bundle(self._bundle))
                except Exception as exc:
                    raise PolicyEvaluationFailed(f"{what} failed: {exc}") from exc
            vector = _output(out, what)
            if key is not None:
                DECISIONS.put(key, out)  # only what the engine answered (a failure raised above)
        else:
            vector = _output(out, what)
        if not isinstance(vector, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in vector.values()
        ):
            raise PolicyEvaluationFailed(
                f"attestation policy {self.policy.policy_id!r}: trust_claims is not an object of integers"
            )
        return {str(k): int(v) for k, v in vector.items()}


def _resource_data(resource_path: str, plugin: str, query: dict[str, str]) -> dict[str, Any]:
    return {"plugin": plugin, "resource-path": [p for p in resource_path.strip("/").split("/") if p], "query": query}


class _CompiledResourcePolicy:
    """A resource policy compiled with one request's ``data`` (regopy fixes data at compile
    time); cached per (policy digest, request) since a deployment has few resource paths."""

    def __init__(self, policy: StoredPolicy, data: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        data_json = json.dumps(data, sort_keys=True)
        self.decisions = DecisionKeys("resource", (policy.text,), data_json)
        self._interp = regopy.Interpreter()
        self._interp.add_module("policy.rego", policy.text)
        self._interp.add_data_json(data_json)
        self._bundle = self._interp.build("data.policy")

    def query(self, ear_claims: dict[str, Any]) -> tuple[str, bytes | None]:
        """The engine's output text, and the memo key to store it under once it is parsed."""
        key = self.decisions.key(ear_claims)
        out = DECISIONS.get(key) if key is not None else None
        if out is not None:
            return out, None
        with self._lock:
            self._interp.set_input(rego_input(ear_claims))
            return str(self._interp.query_bundle(self._bundle)), key


_RESOURCE_CACHE: OrderedDict[str, _CompiledResourcePolicy] = OrderedDict()
_RESOURCE_CACHE_SIZE = 512
_RESOURCE_CACHE_LOCK = threading.Lock()


def _compiled_resource_policy(policy: StoredPolicy, data: dict[str, Any]) -> _CompiledResourcePolicy:
    key = policy.digest + json.dumps(data, sort_keys=True)
    with _RESOURCE_CACHE_LOCK:
        hit = _RESOURCE_CACHE.get(key)
        if hit is not None:
            _RESOURCE_CACHE.move_to_end(key)
            return hit
    compiled = _CompiledResourcePolicy(policy, data)
    with _RESOURCE_CACHE_LOCK:
        _RESOURCE_CACHE[key] = compiled
        while len(_RESOURCE_CACHE) > _RESOURCE_CACHE_SIZE:
            _RESOURCE_CACHE.popitem(last=False)
    return compiled


def evaluate_one_resource_policy(
    policy: StoredPolicy,
    ear_claims: dict[str, Any],
    resource_path: str,
    *,
    plugin: str = "resource",
    query: dict[str, str] | None = None,
) -> ResourceDecision:
    """Evaluate one resource policy (Trustee contract). Denials name the first violation.

    Raises :class:`PolicyInvalid` if the policy does not evaluate.
    """
    try:
        compiled = _compiled_resource_policy(policy, _resource_data(resource_path, plugin, query or {}))
        out, key = compiled.query(ear_claims)
    except Exception as exc:  # regopy raises plain exceptions for parse and evaluation errors
        raise PolicyInvalid(f"resource policy {policy.policy_id!r} does not evaluate: {exc}") from exc
    try:
        doc = _output(out, f"resource policy {policy.policy_id!r}")
    except PolicyEvaluationFailed as exc:
        raise PolicyInvalid(exc.message) from exc
    if key is not None:
        DECISIONS.put(key, out)
    doc = doc if isinstance(doc, dict) else {}
    ids, digests = (policy.policy_id,), (policy.digest,)
    if doc.get("allow") is True:
        return ResourceDecision(True, "allow", f"policy {policy.policy_id!r} allows", ids, digests)
    violations = sorted(str(v) for v in doc.get("violations") or [])
    if violations:
        rule, _, why = violations[0].partition(":")
        reason = why.strip() or violations[0]
        return ResourceDecision(False, f"{policy.policy_id}:{rule.strip()}", reason, ids, digests)
    why = "is false" if "allow" in doc else "is undefined"
    return ResourceDecision(False, f"{policy.policy_id}:allow", f"data.policy.allow {why}", ids, digests)


def scope_matches(scope: str | None, resource_path: str) -> bool:
    """Whether a resource policy scoped to ``scope`` (a path prefix by segments) covers the path."""
    if not scope:
        return False
    want = [p for p in scope.strip("/").split("/") if p]
    have = [p for p in resource_path.strip("/").split("/") if p]
    return have[: len(want)] == want


def check_attestation_policy(policy: StoredPolicy) -> None:
    """Raise :class:`PolicyInvalid` unless ``policy`` compiles and yields a trust vector."""
    CompiledAttestationPolicy(policy)


def check_resource_policy(policy: StoredPolicy) -> None:
    """Raise :class:`PolicyInvalid` unless ``policy`` evaluates on an empty token."""
    evaluate_one_resource_policy(policy, {}, "default/key/probe")


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

    This base keeps them in memory; :class:`FilePolicyStore` persists them. Compiled attestation
    policies are cached by digest, so a changed policy is recompiled and an unchanged one never.
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
            builtin = _builtin_policy(kind, policy_id)
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
    "BUILTIN_POLICIES",
    "CompiledAttestationPolicy",
    "FilePolicyStore",
    "PolicyKind",
    "PolicyStore",
    "ResourceDecision",
    "StoredPolicy",
    "builtin_policy_text",
    "check_attestation_policy",
    "check_resource_policy",
    "evaluate_one_resource_policy",
    "evaluate_resource_policy",
    "policy_digest",
    "scope_matches",
]
