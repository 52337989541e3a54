"""The emulated backends' development roots, as the verifiers see them.

Emulated SEV-SNP reports and TDX quotes use the real binary formats but chain to development
roots that the node agent's emulated backends keep under the installation's data directory; their
public half and its layout are read through :mod:`ccpipe.evidence.emulated_roots`. The
verifiers always *recognise* such a root when given it (to say
:class:`~ccpipe.stages.attest.errors.EmulatedNotAllowed` instead of a vague chain failure) and *accept*
it only when ``VerifierConfig.allow_emulated`` is set; claims are then marked ``emulated``.
This module never creates a root nor issues collateral: it only reads what the emulated backend
already made and published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ccpipe.evidence.dcap_collateral import TdxCollateral
from ccpipe.evidence.emulated_roots import pki_dir, read_emulated_anchors, read_emulated_tdx_collateral


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

    Returns :data:`NO_EMULATED_ROOTS` when ``data_dir`` is None or holds no emulated PKI.
    """
    if data_dir is None or not pki_dir(data_dir).is_dir():
        return NO_EMULATED_ROOTS
    anchors = read_emulated_anchors(data_dir)
    snp = None
    if anchors.snp_ark_pem is not None and anchors.snp_ask_pem is not None:
        snp = (anchors.snp_ark_pem + anchors.snp_ask_pem).encode()
    tdx = anchors.tdx_root_ca_pem.encode() if anchors.tdx_root_ca_pem is not None else None
    return EmulatedRoots(snp_roots_pem=snp, tdx_root_pem=tdx)


def emulated_tdx_collateral_in(data_dir: Path | None) -> dict[str, TdxCollateral]:
    """DCAP collateral the emulated TDX platform under ``data_dir`` published, keyed by its FMSPC.

    The emulated backend issues it (valid 30 days) and reissues it daily; empty when there is no
    emulated TDX platform or nothing published yet.
    """
    return {} if data_dir is None else read_emulated_tdx_collateral(data_dir)
