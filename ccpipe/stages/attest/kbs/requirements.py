"""A workload's ``[tee]`` requirements, enforced by the KBS on every release (pure, no I/O).

The sign stage registers the workload's :class:`~ccpipe.schemas.workload.TeeRequirements` as
the resource ``ccpipe/<workload>/tee-requirements`` (sealed like every resource, with the path
as AAD, and writable only through the admin API). Before any resource policy, the releaser
reads that record and :func:`tee_decision` checks the token's verified claims against it:

* ``types``: the TEE type the verifier's claims name (``ccpipe.tee`` in the token, set by the KBS
  from the appraisal, never from the request);
* ``allow_emulated``: emulated evidence only if both the workload and the installation allow it;
* ``min_tcb``: each component of the verified TCB (:func:`verified_tcb`) at least the minimum.

A workload resource whose requirements are missing or unreadable is refused: a key the KBS
cannot check the requirements of is not released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ccpipe.schemas.kbs import TEE_REQUIREMENTS_TYPE
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.release import ResourceDecision

RULE_PREFIX = "ccpipe:tee."
"""Rule of a refusal, followed by the requirement that failed (``ccpipe:tee.types``…)."""
POLICY_ID = "ccpipe"

_SNP_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")


def requirements_path(workload_id: str) -> str:
    """``ccpipe/<workload>/tee-requirements``: where the workload's requirements are registered."""
    return f"ccpipe/{workload_id}/{TEE_REQUIREMENTS_TYPE}"


def verified_tcb(tee: str | None, tcb: Mapping[str, Any]) -> dict[str, int]:
    """The integer TCB components ``min_tcb`` is compared with, from a verifier's ``tcb`` claims.

    SEV-SNP: the reported TCB's ``bootloader``, ``tee``, ``snp``, ``microcode`` (``fmc``).
    TDX: ``tdx_module`` and ``tdx_module_major`` (TEE_TCB_SVN bytes 0 and 1), ``pce_svn`` and
    ``tcb_up_to_date`` (1 when the TCB status is UpToDate). Sample: ``svn``. A component the
    claims do not carry is absent (and so fails any minimum on it).
    """
    out: dict[str, int] = {}
    if tee == TeeType.SNP:
        out = {k: v for k in _SNP_COMPONENTS if isinstance(v := tcb.get(k), int)}
    elif tee == TeeType.TDX:
        try:
            svn = bytes.fromhex(str(tcb.get("tee_tcb_svn", "")))
        except ValueError:
            svn = b""
        if len(svn) >= 2:
            out = {"tdx_module": svn[0], "tdx_module_major": svn[1]}
        if isinstance(tcb.get("pce_svn"), int):
            out["pce_svn"] = int(tcb["pce_svn"])
        out["tcb_up_to_date"] = int(tcb.get("tcb_status") == "UpToDate")
    elif tee == TeeType.SAMPLE and str(tcb.get("svn", "")).isdigit():
        out = {"svn": int(str(tcb["svn"]))}
    return out


def _denied(requirement: str, reason: str) -> ResourceDecision:
    return ResourceDecision(False, RULE_PREFIX + requirement, f"{requirement}: {reason}", POLICY_ID)


def tee_decision(record: bytes | None, claims: Mapping[str, Any], *, installation_allows_emulated: bool,
                 workload_id: str) -> ResourceDecision | None:
    """A denial when the token's verified TEE does not meet the registered requirements, else None.

    ``record`` is the stored ``tee-requirements`` resource of ``workload_id`` (None: none is
    registered); ``claims`` the verified token's claims.
    """
    if record is None:
        return _denied("requirements", f"no TEE requirements are registered for workload {workload_id!r}")
    try:
        wanted = TeeRequirements.model_validate_json(record)
    except ValidationError:
        return _denied("requirements", f"the TEE requirements registered for workload {workload_id!r} are invalid")
    ccpipe = claims.get("ccpipe") or {}
    tee, tcb = ccpipe.get("tee"), ccpipe.get("tcb")
    unmet = wanted.unmet(tee if isinstance(tee, str) else None, emulated=ccpipe.get("emulated") is not False,
                         tcb=tcb if isinstance(tcb, dict) else {},
                         installation_allows_emulated=installation_allows_emulated)
    return _denied(unmet.requirement, unmet.message) if unmet is not None else None
