"""Resource decisions: the verdict type and ccpipe's ``workload-match`` rule.

``workload-match``: a ``ccpipe/<workload>/<name>`` resource goes only to a token issued for that
workload, so evidence for another workload gets nothing even if it is otherwise affirming. The
rest (EAR status, admin-set Rego policies scoped per prefix) is the attestation service's
resource policy, see :class:`~ccpipe.stages.attest.kbs.attestation.ServicePolicies`. The failed rule
goes to the audit event, never to the requester.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceDecision:
    """The verdict, the rule that decided it, why, and which policy."""

    allowed: bool
    rule: str
    reason: str
    policy_id: str = "default"


def workload_decision(claims: dict[str, Any], path: str) -> ResourceDecision | None:
    """A denial when ``path`` belongs to another workload than the token's, else None."""
    parts = path.split("/")
    if parts[0] != "ccpipe" or len(parts) != 3:
        return None
    token_wl = (claims.get("ccpipe") or {}).get("workload_id")
    if parts[1] != token_wl:
        return ResourceDecision(False, "ccpipe:workload-match",
                                f"resource belongs to workload {parts[1]!r}, token was issued for {token_wl!r}",
                                "ccpipe")
    return None
