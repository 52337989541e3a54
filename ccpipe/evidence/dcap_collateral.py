"""Intel DCAP collateral for TDX as data: what one platform's collateral holds, and its directory layout.

A collateral directory holds, per platform (``<root>/<fmspc>/``, falling back to ``<root>/`` file
by file): ``tcb_info.json`` and ``qe_identity.json`` (Intel PCS v4 response bodies, byte-exact,
since their signatures cover the exact text), ``tcb_signing_chain.pem`` (the PCS
``TCB-Info-Issuer-Chain`` header: TCB Signing certificate, then the Root CA), and optionally
``pck_crl.der`` and ``root_crl.der``.

Two parties use the layout: an operator (or the emulated TDX platform of
``ccpipe.enclave_runner.tee``) writes collateral into it, the TDX verifier reads it. Verifying the
collateral is the verifier's job (``ccpipe.stages.attest.verifiers.tdx_collateral``); this module
only moves bytes. Imports the standard library only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

TCB_INFO_FILE = "tcb_info.json"
QE_IDENTITY_FILE = "qe_identity.json"
TCB_SIGNING_CHAIN_FILE = "tcb_signing_chain.pem"
PCK_CRL_FILE = "pck_crl.der"
ROOT_CRL_FILE = "root_crl.der"


@dataclass(frozen=True)
class TdxCollateral:
    """One platform's collateral, as downloaded from Intel PCS (bodies kept byte-exact)."""

    tcb_info: bytes
    """Body of ``/tdx/certification/v4/tcb?fmspc=…``: ``{"tcbInfo": {…}, "signature": hex}``."""
    qe_identity: bytes
    """Body of ``/tdx/certification/v4/qe/identity``: ``{"enclaveIdentity": {…}, "signature": hex}``."""
    tcb_signing_chain: bytes
    """PEM: Intel SGX TCB Signing certificate, then the Intel SGX Root CA (TCB-Info-Issuer-Chain)."""
    pck_crl: bytes | None = None
    """DER/PEM CRL of the PCK Platform or Processor CA, if available."""
    root_crl: bytes | None = None
    """DER/PEM CRL of the Intel SGX Root CA, if available."""


def load_collateral_dir(root: Path, fmspc: str) -> TdxCollateral | None:
    """Collateral for ``fmspc`` from ``<root>/<fmspc>/`` with fallback to ``<root>/`` per file.

    Returns None when no TCB info, QE identity or signing chain exists for this FMSPC.
    """

    def read(name: str) -> bytes | None:
        for d in (root / fmspc.lower(), root / fmspc.upper(), root):
            p = d / name
            if p.is_file():
                return p.read_bytes()
        return None

    tcb_info, qe_identity, chain = read(TCB_INFO_FILE), read(QE_IDENTITY_FILE), read(TCB_SIGNING_CHAIN_FILE)
    if tcb_info is None or qe_identity is None or chain is None:
        return None
    return TdxCollateral(tcb_info, qe_identity, chain, read(PCK_CRL_FILE), read(ROOT_CRL_FILE))


def write_collateral_dir(root: Path, fmspc: str, collateral: TdxCollateral) -> Path:
    """Store ``collateral`` as ``<root>/<fmspc>/`` (lower-case FMSPC) and return that directory.

    Each file is replaced atomically (written beside it, then renamed), so a concurrent
    :func:`load_collateral_dir` reads every file either whole-old or whole-new, never torn.
    Raises ``OSError`` if the directory cannot be written.
    """
    directory = root / fmspc.lower()
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        TCB_INFO_FILE: collateral.tcb_info,
        QE_IDENTITY_FILE: collateral.qe_identity,
        TCB_SIGNING_CHAIN_FILE: collateral.tcb_signing_chain,
        PCK_CRL_FILE: collateral.pck_crl,
        ROOT_CRL_FILE: collateral.root_crl,
    }
    # TCB info last: its modification time tells a writer how old the whole set is.
    for name in sorted(files, key=lambda n: n == TCB_INFO_FILE):
        data = files[name]
        if data is None:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return directory
