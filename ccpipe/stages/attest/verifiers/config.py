"""What a verifier trusts and tolerates: roots, time, stores, policy thresholds.

Everything here is data: the verifier takes it once, when it is built by
:func:`ccpipe.stages.attest.verifiers.verifier_for`. ``now`` fixes the verification time (certificate
validity, collateral expiry) so that old vectors reach a verdict in tests; ``None`` means the
current time at each verification.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TdxTcbStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SnpTcb(_Frozen):
    """A SEV-SNP TCB version (security patch levels); ``fmc`` exists on Turin only."""

    bootloader: int = Field(ge=0, le=255)
    tee: int = Field(ge=0, le=255)
    snp: int = Field(ge=0, le=255)
    microcode: int = Field(ge=0, le=255)
    fmc: int | None = Field(default=None, ge=0, le=255)


class SnpPolicy(_Frozen):
    """Policy of the SEV-SNP verifier."""

    min_report_version: int = Field(default=2, ge=2, le=5, description="Oldest report version accepted.")
    max_vmpl: int = Field(default=0, ge=0, le=3, description="Highest VMPL the report may come from.")
    allow_debug: bool = Field(default=False, description="Accept guests whose policy allows debugging.")
    allow_migration_agent: bool = Field(default=False, description="Accept guests that allow a migration agent.")
    min_tcb: SnpTcb | None = Field(default=None, description="Minimum reported TCB (each component ≥).")
    products: tuple[Literal["Milan", "Genoa", "Turin"], ...] = Field(
        default=("Milan", "Genoa", "Turin"), description="Processor generations accepted."
    )
    vcek_store: Path | None = Field(
        default=None,
        description="Offline VCEK store: <dir>/vcek/<hwid hex>/bl<n>_tee<n>_snp<n>_ucode<n>[_fmc<n>]_vcek.der",
    )
    check_certificate_dates: bool = Field(default=True, description="Enforce VCEK/VLEK/ASK/ARK validity periods.")


class TdxPolicy(_Frozen):
    """Policy of the Intel TDX verifier."""

    allow_debug: bool = Field(default=False, description="Accept TDs with the DEBUG attribute.")
    accepted_tcb_statuses: tuple[TdxTcbStatus, ...] = Field(
        default=(
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
        ),
        description="TCB statuses accepted (the status is a claim either way; Revoked is never accepted).",
    )
    collateral_dir: Path | None = Field(
        default=None,
        description="Offline collateral: <dir>/<fmspc>/tcb_info.json, qe_identity.json, tcb_signing_chain.pem, "
        "pck_crl.der, root_crl.der (files in <dir> itself serve every FMSPC).",
    )
    expired_collateral: Literal["reject", "report"] = Field(
        default="reject",
        description="Collateral past nextUpdate: refuse, or accept and report it as a claim.",
    )
    allow_expired_collateral_signer: bool = Field(
        default=False,
        description="Accept a TCB Signing certificate outside its validity period (Intel re-issues it with the "
        "same key; offline copies go stale). Its signature must still chain to the Intel root.",
    )
    require_collateral: bool = Field(default=True, description="Refuse quotes when no collateral is available.")


class VerifierConfig(_Frozen):
    """Configuration of every verifier built by the registry."""

    now: datetime | None = Field(default=None, description="Verification time (UTC); None = the current time.")
    allow_emulated: bool = Field(
        default=False, description="Accept development evidence: the sample TEE and emulated roots."
    )
    emulated_snp_roots_pem: bytes | None = Field(
        default=None, description="PEM ARK and ASK of each emulated SEV-SNP platform trusted (one set per host, "
        "in any order), used only if allowed."
    )
    emulated_tdx_root_pem: bytes | None = Field(
        default=None, description="PEM root CA of each emulated TDX platform trusted, used only if allowed."
    )
    snp: SnpPolicy = Field(default_factory=SnpPolicy)
    tdx: TdxPolicy = Field(default_factory=TdxPolicy)

    def time(self) -> datetime:
        """The verification time: ``now`` (made UTC-aware) or the current UTC time."""
        if self.now is None:
            return datetime.now(UTC)
        return self.now if self.now.tzinfo else self.now.replace(tzinfo=UTC)
