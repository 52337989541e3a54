"""The emulated backends' development roots, as the verifiers see them.

Emulated SEV-SNP reports and TDX quotes use the real binary formats but chain to development
roots kept under the installation's data directory by ``ccpipe.enclave_runner.tee.emulated_pki``. The
verifiers always *recognise* such a root when given it (to say
:class:`~ccpipe.stages.attest.errors.EmulatedNotAllowed` instead of a vague chain failure) and *accept*
it only when ``VerifierConfig.allow_emulated`` is set; claims are then marked ``emulated``.
This module never creates a root: it only reads one that the emulated backend already made.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ccpipe.stages.attest.verifiers.tdx_collateral import TdxCollateral


@dataclass(frozen=True)
class EmulatedRoots:
    """PEM roots of the emulated backends (None when there are none)."""

    snp_roots_pem: bytes | None
    """The emulated ARK followed by its ASK."""
    tdx_root_pem: bytes | None
    """The emulated SGX Root CA."""


NO_EMULATED_ROOTS = EmulatedRoots(None, None)
RootsVersion = tuple[tuple[int, int] | None, ...]


def emulated_roots_version(data_dir: Path | None) -> RootsVersion:
    """A cheap fingerprint (two ``stat`` calls) of the emulated roots under ``data_dir``.

    The emulated backend creates each TEE's directory complete and renames it into place, so
    the roots :func:`emulated_roots_in` would read change only when this changes.
    """
    if data_dir is None:
        return ()
    try:
        from ccpipe.enclave_runner.tee.emulated_pki import pki_dir
    except ImportError:
        return ()
    base = os.fspath(pki_dir(data_dir))
    out: list[tuple[int, int] | None] = []
    for tee in ("snp", "tdx"):
        try:
            st = os.stat(os.path.join(base, tee))
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns))
    return tuple(out)


def emulated_roots_in(data_dir: Path | None) -> EmulatedRoots:
    """The emulated roots an installation's backends already created under ``data_dir``.

    Returns :data:`NO_EMULATED_ROOTS` when ``data_dir`` is None, holds no emulated PKI, or the
    emulated backend is not installed.
    """
    if data_dir is None:
        return NO_EMULATED_ROOTS
    try:
        from ccpipe.enclave_runner.tee import emulated_pki
    except ImportError:
        return NO_EMULATED_ROOTS
    if not emulated_pki.pki_dir(data_dir).is_dir():
        return NO_EMULATED_ROOTS
    # create=False: a verifier only reads roots the emulated backend made; it never mints them.
    anchors = emulated_pki.emulated_anchors(data_dir, create=False)
    snp = None
    if anchors.snp_ark_pem is not None and anchors.snp_ask_pem is not None:
        snp = (anchors.snp_ark_pem + anchors.snp_ask_pem).encode()
    tdx = anchors.tdx_root_ca_pem.encode() if anchors.tdx_root_ca_pem is not None else None
    return EmulatedRoots(snp_roots_pem=snp, tdx_root_pem=tdx)


def emulated_tdx_collateral_in(data_dir: Path | None) -> dict[str, TdxCollateral]:
    """DCAP collateral for the emulated TDX platform under ``data_dir``, keyed by its FMSPC.

    Freshly issued (valid 30 days) by the emulated TCB Signing key; empty when there is no
    emulated TDX platform. Never creates one.
    """
    if data_dir is None:
        return {}
    try:
        from ccpipe.enclave_runner.tee import emulated_pki
        from ccpipe.enclave_runner.tee.emulated_tdx_collateral import emulated_tdx_collateral
    except ImportError:
        return {}
    platform = emulated_pki.pki_dir(data_dir) / "tdx" / "platform.json"
    if not platform.is_file():
        return {}
    fmspc = str(json.loads(platform.read_text())["fmspc"]).lower()
    c = emulated_tdx_collateral(data_dir)
    return {
        fmspc: TdxCollateral(
            tcb_info=c.tcb_info.encode(),
            qe_identity=c.qe_identity.encode(),
            tcb_signing_chain=c.tcb_info_issuer_chain.encode(),
            pck_crl=c.pck_crl,
            root_crl=c.root_ca_crl,
        )
    }
