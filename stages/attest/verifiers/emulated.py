"""The emulated backends' development roots, as the verifiers see them.

Emulated SEV-SNP reports and TDX quotes use the real binary formats but chain to a development
root made by ``enclave_runner.tee.emulated_pki``. The verifiers always *recognise* that root (to
say :class:`~stages.attest.errors.EmulatedNotAllowed` instead of a vague chain failure) and
*accept* it only when ``VerifierConfig.allow_emulated`` is set; claims are then marked
``emulated``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmulatedAnchors:
    """PEM roots of the emulated backends (None when the backend is not installed)."""

    snp_roots_pem: bytes | None
    tdx_root_pem: bytes | None


def default_emulated_anchors() -> EmulatedAnchors:
    """The development roots of this installation's emulated backends, if they exist."""
    try:
        from enclave_runner.tee import emulated_pki  # type: ignore[attr-defined]
    except ImportError:
        return EmulatedAnchors(None, None)
    snp = getattr(emulated_pki, "snp_roots_pem", None)
    tdx = getattr(emulated_pki, "tdx_root_pem", None)
    return EmulatedAnchors(
        snp_roots_pem=snp() if callable(snp) else None,
        tdx_root_pem=tdx() if callable(tdx) else None,
    )
