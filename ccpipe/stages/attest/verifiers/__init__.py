"""Attestation verifiers: one per TEE, behind one interface, chosen in one registry.

Example:

    from ccpipe.stages.attest.verifiers import Binding, VerifierConfig, verifier_for

    claims = verifier_for("snp", VerifierConfig()).verify(evidence, Binding(report_data=digest))

The registry below is the only place that says what may verify evidence. The ``sample`` TEE
(no signature) is registered only when ``VerifierConfig.allow_emulated`` is set; the SNP and TDX
verifiers recognise the emulated backends' development roots (``VerifierConfig.emulated_*``,
filled from :func:`~ccpipe.stages.attest.verifiers.emulated.emulated_roots_in`) but accept them only then.
"""

from __future__ import annotations

from collections.abc import Callable

from ccpipe.evidence.dcap_collateral import TdxCollateral
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import UnknownTeeType
from ccpipe.stages.attest.verifiers.config import SnpPolicy, SnpTcb, TdxPolicy, VerifierConfig
from ccpipe.stages.attest.verifiers.interface import Binding, Claims, Verifier
from ccpipe.stages.attest.verifiers.sample import SampleVerifier
from ccpipe.stages.attest.verifiers.snp import SnpVerifier
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier

Constructor = Callable[[VerifierConfig], Verifier]


def _snp(config: VerifierConfig) -> Verifier:
    return SnpVerifier(config)


def _tdx(config: VerifierConfig) -> Verifier:
    return TdxVerifier(config)


_HARDWARE: dict[TeeType, Constructor] = {
    TeeType.SNP: _snp,
    TeeType.TDX: _tdx,
}
_DEVELOPMENT: dict[TeeType, Constructor] = {
    TeeType.SAMPLE: SampleVerifier,
}


def registry(config: VerifierConfig) -> dict[TeeType, Constructor]:
    """The verifiers this configuration allows, by TEE type."""
    if config.allow_emulated:
        return {**_HARDWARE, **_DEVELOPMENT}
    return dict(_HARDWARE)


def verifier_for(tee: TeeType | str, config: VerifierConfig) -> Verifier:
    """The verifier for ``tee`` under ``config``.

    Raises :class:`~ccpipe.stages.attest.errors.UnknownTeeType`, naming the accepted types, for a TEE
    without a verifier or one that the configuration disables (``sample`` without
    ``allow_emulated``).
    """
    allowed = registry(config)
    accepted = ", ".join(sorted(t.value for t in allowed))
    try:
        key = TeeType(tee)
    except ValueError:
        raise UnknownTeeType(f"no verifier for TEE type {tee!r}; accepted types: {accepted}") from None
    if key not in allowed:
        why = " (development evidence is not allowed)" if key in _DEVELOPMENT else ""
        raise UnknownTeeType(f"no verifier for TEE type {key.value!r}{why}; accepted types: {accepted}")
    return allowed[key](config)


__all__ = [
    "Binding",
    "Claims",
    "SnpPolicy",
    "SnpTcb",
    "TdxCollateral",
    "TdxPolicy",
    "Verifier",
    "VerifierConfig",
    "registry",
    "verifier_for",
]
