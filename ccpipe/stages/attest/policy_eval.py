"""Evaluating policies (Trustee's contracts, so Trustee's own policies run unchanged):

* attestation policy — ``package policy``; ``input`` = verifier claims under the TEE name plus
  ``init_data``/``report_data``; the host function ``query_reference_value(name)`` returns the
  reference values; the rule ``data.policy.trust_claims`` is the vector. regopy cannot register
  host functions, so a second module defines ``query_reference_value`` over a reserved input
  key (:data:`REFERENCE_INPUT_KEY`) that is filled per evaluation — the compiled policy is then
  reused for every appraisal;
* resource policy — ``package policy``, rule ``data.policy.allow``; ``input`` = EAR token
  claims, ``data`` = ``{"plugin", "resource-path", "query"}``. A policy may also define a set
  ``violations`` of ``"<rule>: <why>"`` strings; a denial then names the first of them
  (Trustee only says "denied"). Policies without ``violations`` are named by ``allow``.

Compiled engines and memoised decisions are shared through
:mod:`ccpipe.stages.attest.rego_engine`, keyed on what the compiled plan reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ccpipe.stages.attest.errors import PolicyEvaluationFailed, PolicyInvalid
from ccpipe.stages.attest.policy_memo import DECISIONS
from ccpipe.stages.attest.policy_reads import PolicyReads
from ccpipe.stages.attest.policy_text import StoredPolicy
from ccpipe.stages.attest.rego_engine import ENGINES, CompiledRego, Modules

REFERENCE_INPUT_KEY = "ccpipe-reference-values"
REFERENCE_MODULE = (
    "package policy\n\nimport rego.v1\n\n"
    f'query_reference_value(name) := input["{REFERENCE_INPUT_KEY}"][name]\n'
)
"""The module that gives attestation policies Trustee's ``query_reference_value`` host function."""
_TRUST_CLAIMS = "data.policy.trust_claims"
_RESOURCE_QUERY = "data.policy"


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
    """An attestation policy, compiled once per text; :meth:`trust_vector` evaluates it."""

    def __init__(self, policy: StoredPolicy) -> None:
        """Compile ``policy``; raises :class:`PolicyInvalid` if it does not parse or produce
        ``trust_claims`` on an empty input."""
        self.policy = policy
        self._modules: Modules = (("policy.rego", policy.text), ("ccpipe_reference.rego", REFERENCE_MODULE))
        try:
            self._engine()
        except Exception as exc:  # regopy raises plain exceptions for parse errors
            raise PolicyInvalid(f"attestation policy {policy.policy_id!r} does not compile: {exc}") from exc
        try:
            self.trust_vector({}, {})
        except PolicyEvaluationFailed as exc:
            raise PolicyInvalid(f"attestation policy {policy.policy_id!r}: {exc.message}") from exc

    def _engine(self) -> CompiledRego:
        # Looked up per call, so the engine cache's bound holds (an evicted engine is rebuilt).
        return ENGINES.get(self._modules, _TRUST_CLAIMS, {})

    @property
    def reads(self) -> PolicyReads:
        """What the compiled policy reads of its input (and whether decisions are memoised)."""
        return self._engine().reads

    def trust_vector(self, policy_input: dict[str, Any], reference: dict[str, list[Any]]) -> dict[str, int]:
        """The AR4SI vector for ``policy_input`` with ``reference`` values.

        Raises :class:`PolicyEvaluationFailed` if the engine fails or ``trust_claims`` is not an
        object of integers. The decision for an input is memoised on the claims the compiled
        policy reads (:mod:`ccpipe.stages.attest.policy_memo`), when that set can be bounded.
        """
        what = f"attestation policy {self.policy.policy_id!r}"
        try:
            out, key = self._engine().evaluate({**policy_input, REFERENCE_INPUT_KEY: reference})
        except Exception as exc:
            raise PolicyEvaluationFailed(f"{what} failed: {exc}") from exc
        vector = _output(out, what)
        if key is not None:
            DECISIONS.put(key, out)  # only what the engine answered (a failure raised above)
        if not isinstance(vector, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in vector.values()
        ):
            raise PolicyEvaluationFailed(f"{what}: trust_claims is not an object of integers")
        return {str(k): int(v) for k, v in vector.items()}


def resource_data(resource_path: str, plugin: str, query: dict[str, str]) -> dict[str, Any]:
    """The ``data`` document of a resource request (Trustee's contract)."""
    return {"plugin": plugin, "resource-path": [p for p in resource_path.strip("/").split("/") if p], "query": query}


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
    data = resource_data(resource_path, plugin, query or {})
    try:
        out, key = ENGINES.get((("policy.rego", policy.text),), _RESOURCE_QUERY, data).evaluate(ear_claims)
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


def check_attestation_policy(policy: StoredPolicy) -> None:
    """Raise :class:`PolicyInvalid` unless ``policy`` compiles and yields a trust vector."""
    CompiledAttestationPolicy(policy)


def check_resource_policy(policy: StoredPolicy) -> None:
    """Raise :class:`PolicyInvalid` unless ``policy`` evaluates on an empty token."""
    evaluate_one_resource_policy(policy, {}, "default/key/probe")


__all__ = [
    "REFERENCE_INPUT_KEY",
    "REFERENCE_MODULE",
    "CompiledAttestationPolicy",
    "ResourceDecision",
    "check_attestation_policy",
    "check_resource_policy",
    "evaluate_one_resource_policy",
    "resource_data",
]
