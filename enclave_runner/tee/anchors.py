"""The emulated trust anchors, for a verifier whose policy allows emulated evidence.

They are separate from AMD's and Intel's roots and say "Emulated" in every subject; load them
as their own trust anchor set, never merged into the vendor roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from enclave_runner.tee.emulated_pki import KeyStore
from enclave_runner.tee.emulated_snp import snp_store
from enclave_runner.tee.emulated_tdx import tdx_store


@dataclass(frozen=True)
class EmulatedAnchors:
    """The emulated trust anchors a verifier loads when its policy allows emulated evidence."""

    snp_ark_pem: str
    """SEV-SNP: the emulated ARK (self-signed root of ASK → VCEK)."""
    snp_ask_pem: str
    """SEV-SNP: the emulated ASK (intermediate; also sent in the evidence's cert_chain)."""
    tdx_root_ca_pem: str
    """TDX: the emulated SGX Root CA (root of the PCK chain and of the TCB signing cert)."""
    tdx_tcb_signing_pem: str
    """TDX: the emulated TCB Signing certificate that signs TCB info and QE identity."""


def emulated_anchors(data_dir: Path) -> EmulatedAnchors:
    """The emulated roots of the installation at ``data_dir`` (generated on first use).

    Raises :class:`EmulatedPkiError` if they cannot be created or read.
    """
    snp, tdx = snp_store(data_dir), tdx_store(data_dir)

    def pem(store: KeyStore, stem: str) -> str:
        return store.cert(stem).public_bytes(serialization.Encoding.PEM).decode()

    return EmulatedAnchors(
        snp_ark_pem=pem(snp, "ark"),
        snp_ask_pem=pem(snp, "ask"),
        tdx_root_ca_pem=pem(tdx, "root-ca"),
        tdx_tcb_signing_pem=pem(tdx, "tcb-signing"),
    )
