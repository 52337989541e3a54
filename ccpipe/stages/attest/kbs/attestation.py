"""The KBS's view of the attestation service (``ccpipe.stages.attest.appraisal``): three small adapters.

* :class:`ServiceAppraiser` — the :class:`~ccpipe.stages.attest.kbs.appraiser.Appraiser` seam over
  :meth:`AttestationService.appraise`;
* :class:`ServiceReferences` — RVPS registration and look-up over its reference value store
  (scope = workload id);
* :class:`ServicePolicies` — resource decisions: ccpipe's ``workload-match`` rule, then the
  service's resource policies (``default`` plus every policy scoped to a prefix of the path);
  admin-set policies go to its policy store.

Every attestation-service error is wrapped at this edge into a KBS error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.errors import AttestationError
from ccpipe.stages.attest.kbs.appraiser import AppraisalInput, AppraisalOutcome
from ccpipe.stages.attest.kbs.errors import AdminBodyInvalid, AuditUnavailable
from ccpipe.stages.attest.kbs.release import ResourceDecision, workload_decision
from ccpipe.stages.attest.policy_text import StoredPolicy
from ccpipe.stages.attest.rvps import parse_message

RESOURCE_POLICY_ID = "default"


def _resource_policy_id(prefix: str | None, policy_id: str | None) -> str:
    """The id a resource policy is kept under: the given one, ``scoped-<prefix>``, or ``default``."""
    return policy_id or ("scoped-" + prefix.strip("/").replace("/", "-") if prefix else RESOURCE_POLICY_ID)


class ServiceAppraiser:
    """:class:`Appraiser` over the attestation service."""

    def __init__(self, service: AttestationService) -> None:
        """Appraise with ``service``."""
        self.service = service

    def appraise(self, req: AppraisalInput) -> AppraisalOutcome:
        """The service's appraisal as an outcome; a configuration error becomes a rejection."""
        try:
            tee: TeeType | str = TeeType(req.tee)
        except ValueError:
            tee = req.tee
        try:
            res = self.service.appraise(AppraisalRequest(
                tee=tee,  # type: ignore[arg-type]
                evidence=req.evidence, expected_report_data=req.expected_report_data,
                expected_init_data_digest=req.expected_init_data_digest, workload_id=req.workload_id,
                policy_id=req.policy_id, runtime_data=req.runtime_data, devices=req.devices,
                expected_device_report_data=req.expected_device_report_data,
                sign=False))  # the KBS signs its own token over these claims
        except ConfigurationError as exc:
            raise AuditUnavailable(f"the attestation service is misconfigured: {exc.message}") from exc
        submods = res.ear_claims.get("submods") if isinstance(res.ear_claims, dict) else None
        return AppraisalOutcome(
            # the type the verifier's claims name (the request only chose which verifier ran)
            ok=res.ok, tee=str(res.claims.get("tee") or (res.tee.value if res.tee else req.tee)),
            backend=res.backend, emulated=res.emulated,
            claims=res.claims, ear_status=res.ear_status, trust_vector=res.trust_vector, policy_id=res.policy_id,
            policy_digest=res.policy_digest, evidence_digest=res.evidence_digest, measurement=res.measurement,
            tcb=dict(res.claims.get("tcb") or {}), rejection=res.rejection, submods=submods or {},
        )


class ServiceReferences:
    """Reference values in the service's store."""

    def __init__(self, service: AttestationService) -> None:
        """Use ``service.reference_values``."""
        self.store = service.reference_values

    def register(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        """Register an RVPS ``sample`` message; raises :class:`AdminBodyInvalid` if malformed."""
        try:
            return list(self.store.register(message, scope=scope))
        except AttestationError as exc:
            raise AdminBodyInvalid(exc.message) from exc

    def check(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        """The names ``message`` would register (``scope/<s>/<name>`` for scoped ones); nothing stored.

        Raises :class:`AdminBodyInvalid` if malformed.
        """
        try:
            parsed = parse_message(message, scope=scope)
        except AttestationError as exc:
            raise AdminBodyInvalid(exc.message) from exc
        return sorted(f"scope/{s}/{n}" if s else n for s, n in parsed)

    def get(self, scope: str | None, name: str) -> list[Any]:
        """Live values of ``name`` visible to ``scope`` (global merged with the scope's)."""
        return list(self.store.get(name, scope=scope))

    def scoped(self, scope: str, name: str) -> list[Any]:
        """Values visible to ``scope`` (the service's store merges global values in)."""
        return self.get(scope, name)


class ServicePolicies:
    """Resource decisions and policy administration over the service."""

    def __init__(self, service: AttestationService) -> None:
        """Use ``service``'s policy store."""
        self.service = service

    def decide(self, claims: dict[str, Any], path: str) -> ResourceDecision:
        """``workload-match`` first, then the service's resource policies (all must allow)."""
        first = workload_decision(claims, path)
        if first is not None:
            return first
        try:
            d = self.service.evaluate_resource_policy(RESOURCE_POLICY_ID, claims, path)
        except AttestationError as exc:
            return ResourceDecision(False, f"{RESOURCE_POLICY_ID}:evaluation", exc.message, RESOURCE_POLICY_ID)
        return ResourceDecision(d.allowed, d.rule, d.reason, ",".join(d.policy_ids) or RESOURCE_POLICY_ID)

    def set_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        """Store a resource policy (``default``, or one scoped to ``prefix``); raises :class:`AdminBodyInvalid`."""
        return self._policy(self.service.policies.set_policy, _resource_policy_id(prefix, policy_id), rego,
                            kind="resource", scope=prefix or None)

    def check_resource_policy(self, rego: str, prefix: str | None, policy_id: str | None = None) -> dict[str, str]:
        """What :meth:`set_resource_policy` would keep, checked, not stored; raises :class:`AdminBodyInvalid`."""
        return self._policy(self.service.policies.check_policy, _resource_policy_id(prefix, policy_id), rego,
                            kind="resource", scope=prefix or None)

    def set_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        """Store an attestation policy; raises :class:`AdminBodyInvalid`."""
        return self._policy(self.service.policies.set_policy, policy_id, rego, kind="attestation")

    def check_attestation_policy(self, policy_id: str, rego: str) -> dict[str, str]:
        """What :meth:`set_attestation_policy` would keep, checked, not stored; raises :class:`AdminBodyInvalid`."""
        return self._policy(self.service.policies.check_policy, policy_id, rego, kind="attestation")

    @staticmethod
    def _policy(op: Callable[..., StoredPolicy], policy_id: str, rego: str, **kw: Any) -> dict[str, str]:
        try:
            stored = op(policy_id, rego, **kw)
        except AttestationError as exc:
            raise AdminBodyInvalid(exc.message) from exc
        return {"policy_id": stored.policy_id, "policy_digest": stored.digest}

    def ids(self) -> list[str]:
        """Ids of the stored resource policies."""
        return [p.policy_id for p in self.service.policies.list_policies("resource")]
