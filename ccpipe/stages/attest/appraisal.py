"""The attestation service: evidence → verified claims → policy → signed EAR appraisal.

Example::

    service = AttestationService.for_data_dir(data_dir, allow_emulated=True)
    result = service.appraise(AppraisalRequest(tee=TeeType.SNP, evidence=raw, expected_report_data=digest,
                                               workload_id="wl-1"))
    if result.ok: token = result.ear_token           # ES256 EAR JWT, Trustee's profile

Steps: (1) the verifier for the TEE checks signatures, the vendor (or, if allowed, the emulated)
chain, TCB, debug/VMPL and the binding of report_data and the initdata digest; (2) the
attestation policy turns the claims and the reference values visible to the workload into an
AR4SI trust vector; (3) the vector's worst tier is the EAR status; (4) the appraisal is signed.

:meth:`AttestationService.appraise` never raises for bad evidence: :attr:`Appraisal.rejection`
names the failed check (its ``code`` is the :mod:`ccpipe.stages.attest.errors` leaf). It raises only for
configuration problems (:class:`~ccpipe.schemas.errors.ConfigurationError`: unknown policy id, unreadable
key or store). ``ok`` is True when the evidence verified and the status is ``affirming`` or
``warning`` solely because the hardware is emulated (which the configuration allowed, or the
verifier would have refused it). Anything else — an unrecognised measurement (executables 33),
an out-of-date TCB (hardware 32 on real hardware) — is a :class:`PolicyContraindicated`
rejection that lists the claims; the signed token is still returned for the audit trail.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.ear import EarSigner, ear_status, make_ear_claims, sign_ear, verify_ear
from ccpipe.stages.attest.errors import (
    AppraisalRequestInvalid,
    AttestationError,
    EvidenceMalformed,
    PolicyContraindicated,
    UnknownTeeType,
)
from ccpipe.stages.attest.policy_eval import ResourceDecision
from ccpipe.stages.attest.policy_store import FilePolicyStore, PolicyStore, evaluate_resource_policy
from ccpipe.stages.attest.rvps import FileReferenceValueStore, ReferenceValueStore
from ccpipe.stages.attest.verifiers import Binding, Claims, Verifier, VerifierConfig, verifier_for
from ccpipe.stages.attest.verifiers.emulated import (
    RootsVersion,
    emulated_roots_in,
    emulated_roots_version,
    emulated_tdx_collateral_in,
)
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier

STAGE = "attest"
_TDX_REFRESH_S = 24 * 3600
_EXPLAIN = {
    "executables": "the launch measurement is not a registered reference value for this workload",
    "hardware": "the platform (chain/TCB) is not recognised as genuine and current",
    "configuration": "the configuration (debug, migration agent, initdata digest) is not an approved one",
}


@dataclass(frozen=True)
class AppraisalRequest:
    """What to appraise: evidence of ``tee`` and what it must be bound to.

    ``expected_report_data`` (≤ 64 bytes, zero-padded as Trustee does) and
    ``expected_init_data_digest`` are checked by the verifier. ``workload_id`` selects the
    reference values (global ∪ that workload's); ``reference_scope`` overrides it (the build
    stage uses ``build-runner``). ``runtime_data`` / ``init_data_claims`` are copied into the
    token's annotated evidence (the KBS puts the RCAR runtime data there: ``tee-pubkey``).
    """

    tee: TeeType
    evidence: bytes
    expected_report_data: bytes
    expected_init_data_digest: bytes | None = None
    workload_id: str | None = None
    policy_id: str = "default"
    backend: str | None = None
    reference_scope: str | None = None
    runtime_data: Mapping[str, Any] | None = None
    init_data_claims: Mapping[str, Any] | None = None
    sign: bool = True
    """Sign the EAR token; a caller that issues its own token from the claims (the KBS) skips it."""
    devices: Mapping[str, bytes] | None = None
    """Devices' evidence by TEE type (RCAR ``additional_evidence``); each must verify and carry
    ``expected_device_report_data``, or the whole appraisal is refused."""
    expected_device_report_data: bytes | None = None


@dataclass(frozen=True)
class Appraisal:
    """The outcome: verdict, claims, EAR status and vector, signed token, and what decided it."""

    ok: bool
    tee: TeeType | None
    """None only when the request named a TEE type that does not exist."""
    backend: str
    emulated: bool
    claims: dict[str, Any]
    ear_status: str
    trust_vector: dict[str, int]
    ear_token: str
    policy_id: str
    policy_digest: str
    evidence_digest: str
    rejection: FailureReason | None
    measurement: str | None = None
    ear_claims: dict[str, Any] = field(default_factory=dict)


def evidence_digest(evidence: bytes) -> str:
    """``sha256:<hex>`` of the evidence bytes (what events record)."""
    return "sha256:" + hashlib.sha256(evidence).hexdigest()


def _contraindication(vector: Mapping[str, int], status: str, emulated: bool) -> PolicyContraindicated:
    """The rejection naming every claim outside the affirming tier (emulated hardware excepted)."""
    bad = [
        (k, v)
        for k, v in sorted(vector.items())
        if not -32 <= v <= 31 and not (emulated and k == "hardware" and v == 32)
    ]
    if not bad:
        return PolicyContraindicated(f"the attestation policy asserted nothing (EAR status {status})")
    parts = [f"{k}={v} ({_EXPLAIN.get(k, 'not affirmed')})" for k, v in bad]
    return PolicyContraindicated(f"EAR status {status}: " + "; ".join(parts))


def _acceptable(vector: Mapping[str, int], status: str, emulated: bool) -> bool:
    """Affirming; or warning only because the hardware is emulated (allowed, or we would not
    have verified it). An unrecognised measurement (executables 33) is never acceptable."""
    if status == "affirming":
        return True
    if status != "warning" or not emulated:
        return False
    return all(-32 <= v <= 31 or (k == "hardware" and v == 32) for k, v in vector.items())


class AttestationService:
    """Verifiers + reference values + attestation policy + EAR signer, behind :meth:`appraise`."""

    def __init__(
        self,
        config: VerifierConfig,
        *,
        reference_values: ReferenceValueStore,
        policies: PolicyStore,
        signer: EarSigner,
        data_dir: Path | None = None,
        token_ttl_s: int = 300,
    ) -> None:
        """Build the service. With ``data_dir`` and ``config.allow_emulated``, the emulated
        backends' roots under ``data_dir`` are picked up (also when created later)."""
        self._base = config
        self.reference_values = reference_values
        self.policies = policies
        self.signer = signer
        self.data_dir = data_dir
        self.token_ttl_s = token_ttl_s
        self._lock = threading.Lock()
        self._config = config
        self._verifiers: dict[TeeType, Verifier] = {}
        self._tdx_built = time.monotonic()
        self._roots_version: RootsVersion | None = None
        self._refresh_emulated_roots()

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, *, allow_emulated: bool, config: VerifierConfig | None = None
    ) -> AttestationService:
        """The embedded default: key in ``<data_dir>/keys/attest/``, reference values in
        ``<data_dir>/attest/reference-values/``, policies in ``<data_dir>/attest/policies/``.

        Every process built this way on one data directory shares the stores. Raises
        :class:`~ccpipe.stages.attest.errors.AttestationConfigError` if the key cannot be loaded/created.
        """
        base = (config or VerifierConfig()).model_copy(update={"allow_emulated": allow_emulated})
        return cls(
            base,
            reference_values=FileReferenceValueStore(data_dir / "attest" / "reference-values"),
            policies=FilePolicyStore(data_dir / "attest" / "policies"),
            signer=EarSigner.load_or_create(data_dir / "keys" / "attest"),
            data_dir=data_dir,
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> AttestationService:
        """:meth:`for_data_dir` with the settings' data directory and ``allow_emulated``."""
        return cls.for_data_dir(settings.data_dir, allow_emulated=settings.allow_emulated)

    def _refresh_emulated_roots(self) -> None:
        """Load the emulated roots once they exist (the backend may create them after we start)."""
        # Loaded even when emulation is refused: the verifiers then say "emulated evidence is not
        # allowed" instead of a vague chain failure.
        if self.data_dir is None:
            return
        # Reading the PEM files costs ~0.3 ms; three stat calls tell whether there is anything new.
        version = emulated_roots_version(self.data_dir)
        if version == self._roots_version:
            return
        roots = emulated_roots_in(self.data_dir)
        update = {
            "emulated_snp_roots_pem": self._base.emulated_snp_roots_pem or roots.snp_roots_pem,
            "emulated_tdx_root_pem": self._base.emulated_tdx_root_pem or roots.tdx_root_pem,
        }
        # Rebuilt on any change: a vouched host's TDX collateral may change with the same roots.
        with self._lock:
            self._config = self._base.model_copy(update=update)
            self._verifiers = {}
        self._roots_version = version

    def verifier(self, tee: TeeType) -> Verifier:
        """The verifier for ``tee`` (cached). Raises :class:`~ccpipe.stages.attest.errors.UnknownTeeType`.

        With emulation allowed, the TDX verifier also gets the emulated platform's collateral
        (issued for 30 days; the verifier is rebuilt daily so it never goes stale).
        """
        self._refresh_emulated_roots()
        found = self._verifiers.get(tee)
        if tee == TeeType.TDX and time.monotonic() - self._tdx_built > _TDX_REFRESH_S:
            found = None
        if found is None:
            if tee == TeeType.TDX and self._config.allow_emulated and self._config.emulated_tdx_root_pem:
                found = TdxVerifier(self._config, emulated_collateral=emulated_tdx_collateral_in(self.data_dir))
                self._tdx_built = time.monotonic()
            else:
                found = verifier_for(tee, self._config)
            self._verifiers[tee] = found
        return found

    def appraise(self, req: AppraisalRequest) -> Appraisal:
        """Appraise ``req``; see the module docstring. Raises only :class:`ConfigurationError`."""
        digest = evidence_digest(req.evidence)
        tee: TeeType | None
        try:
            tee = TeeType(req.tee)
        except ValueError:
            tee = None
        early = {"digest": digest, "req": req}
        try:
            if tee is None:
                raise AppraisalRequestInvalid(f"unknown TEE type {req.tee!r}")
            try:
                binding = Binding(
                    report_data=req.expected_report_data, init_data_digest=req.expected_init_data_digest
                )
            except ValidationError as exc:
                raise AppraisalRequestInvalid(f"the expected binding is invalid: {exc.errors()[0]['msg']}") from exc
            claims = self.verifier(tee).verify(req.evidence, binding)
            devices = self._verify_devices(req)
        except ConfigurationError:
            raise
        except AttestationError as exc:
            return self._rejected(early, tee, exc)
        except (ValueError, TypeError, KeyError, IndexError, struct.error, RecursionError) as exc:
            # A parser bug (or evidence nested past the JSON parser's depth) must still be a
            # rejection, never a crash of the service.
            return self._rejected(early, tee, EvidenceMalformed(f"the evidence could not be parsed: {exc}"))
        return self._appraise_claims(req, tee, claims, digest, devices)

    def _verify_devices(self, req: AppraisalRequest) -> dict[str, Claims]:
        """Each device's evidence verified against the device binding; raises naming the device."""
        verified: dict[str, Claims] = {}
        for name, evidence in (req.devices or {}).items():
            try:
                device_tee = TeeType(name)
            except ValueError:
                raise UnknownTeeType(
                    f"additional evidence of type {name[:64]!r} cannot be verified here "
                    f"(device verifiers: {', '.join(t.value for t in TeeType)})",
                    hint="attest without that device, or verify it elsewhere before trusting it") from None
            if req.expected_device_report_data is None:
                raise AppraisalRequestInvalid("device evidence came without the binding it must carry")
            try:
                verified[name] = self.verifier(device_tee).verify(
                    evidence, Binding(report_data=req.expected_device_report_data))
            except AttestationError as exc:
                raise type(exc)(f"additional evidence {name!r}: {exc.message}", hint=exc.hint,
                                code=exc.code) from exc
        return verified

    def _rejected(self, early: dict[str, Any], tee: TeeType | None, exc: AttestationError) -> Appraisal:
        req: AppraisalRequest = early["req"]
        return Appraisal(
            ok=False,
            tee=tee,
            backend=req.backend or "unknown",
            emulated=False,
            claims={},
            ear_status="none",
            trust_vector={},
            ear_token="",
            policy_id=req.policy_id,
            policy_digest="",
            evidence_digest=early["digest"],
            rejection=exc.reason(STAGE),
        )

    def _appraise_claims(self, req: AppraisalRequest, tee: TeeType, claims: Claims, digest: str,
                         devices: Mapping[str, Claims]) -> Appraisal:
        compiled = self.policies.compiled_attestation_policy(req.policy_id)
        backend = req.backend or ("emulated" if claims.emulated else tee.value)
        emulated = claims.emulated or any(d.emulated for d in devices.values())
        ccpipe = {
            "emulated": emulated,
            "tee": tee.value,
            "backend": backend,
            "product": claims.product,
            "workload_id": req.workload_id,
            "evidence_digest": digest,
        }
        policy_input: dict[str, Any] = {
            tee.value: claims.fields,
            "init_data": claims.init_data,
            "report_data": claims.report_data,
            "ccpipe": ccpipe,
        }
        if devices:
            policy_input["devices"] = {name: d.fields for name, d in devices.items()}
        scope = req.reference_scope or req.workload_id
        rejection: AttestationError | None = None
        try:
            vector = compiled.trust_vector(policy_input, self.reference_values.values_for(scope))
        except AttestationError as exc:
            vector, rejection = {}, exc
        status = ear_status(vector) if vector else "none"
        annotated = {
            **policy_input,
            "runtime_data_claims": dict(req.runtime_data) if req.runtime_data is not None else None,
            "init_data_claims": dict(req.init_data_claims) if req.init_data_claims is not None else None,
        }
        submod = {
            "ear.status": status,
            "ear.trustworthiness-vector": vector,
            "ear.appraisal-policy-id": compiled.policy.policy_id,
            "ear.veraison.annotated-evidence": annotated,
            "ear.veraison.policy-claims": {"policy_digest": compiled.policy.digest, "reference_scope": scope},
        }
        body = make_ear_claims({"cpu0": submod}, jti=uuid.uuid4().hex, ttl_s=self.token_ttl_s)
        token = sign_ear(body, self.signer) if req.sign else ""
        if rejection is None and not _acceptable(vector, status, emulated):
            rejection = _contraindication(vector, status, emulated)
        claims_json = claims.model_dump(mode="json")
        if devices:
            claims_json["devices"] = {name: d.model_dump(mode="json") for name, d in devices.items()}
        return Appraisal(
            ok=rejection is None,
            tee=tee,
            backend=backend,
            emulated=emulated,
            claims=claims_json,
            ear_status=status,
            trust_vector=vector,
            ear_token=token,
            policy_id=compiled.policy.policy_id,
            policy_digest=compiled.policy.digest,
            evidence_digest=digest,
            rejection=rejection.reason(STAGE) if rejection is not None else None,
            measurement=claims.measurement,
            ear_claims=body,
        )

    def verify_token(self, token: str) -> dict[str, Any]:
        """The claims of an EAR token this service signed; raises :class:`EarTokenInvalid`."""
        return verify_ear(token, self.signer)

    def evaluate_resource_policy(
        self, policy_id: str, ear_claims: dict[str, Any], resource_path: str, **kw: Any
    ) -> ResourceDecision:
        """:func:`ccpipe.stages.attest.policy_store.evaluate_resource_policy` on this service's policy store."""
        return evaluate_resource_policy(self.policies, policy_id, ear_claims, resource_path, **kw)


__all__ = ["Appraisal", "AppraisalRequest", "AttestationService", "evidence_digest"]
