"""The emulated backends' development roots, as the verifiers see them.

Emulated SEV-SNP reports and TDX quotes use the real binary formats but chain to development
roots that the node agent's emulated backends keep under the installation's data directory; their
public half and its layout are read through :mod:`ccpipe.evidence.emulated_roots`; the roots of
other hosts that the admin vouched for, through :mod:`ccpipe.evidence.enrolled_roots`. The
verifiers always *recognise* such a root when given it (to say
:class:`~ccpipe.stages.attest.errors.EmulatedNotAllowed` instead of a vague chain failure) and *accept*
it only when ``VerifierConfig.allow_emulated`` is set; claims are then marked ``emulated``.
This module never creates a root nor issues collateral: it only reads what the emulated backend
already made and published.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ccpipe.evidence.dcap_collateral import TdxCollateral
from ccpipe.evidence.emulated_roots import EmulatedAnchors, pki_dir, read_anchors_in, read_tdx_collateral_in
from ccpipe.evidence.enrolled_roots import vouched_dir, vouched_root_dirs
from ccpipe.evidence.errors import EmulatedPkiError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatedRoots:
    """PEM roots of the emulated backends (None when there are none)."""

    snp_roots_pem: bytes | None
    """Per emulated SEV-SNP platform its ARK followed by its ASK (this host's, then vouched hosts')."""
    tdx_root_pem: bytes | None
    """The root CA of each emulated TDX platform."""


NO_EMULATED_ROOTS = EmulatedRoots(None, None)
RootsVersion = tuple[tuple[int, int] | None, ...]


def _root_dirs(data_dir: Path) -> list[Path]:
    """This host's emulated roots, then those of other hosts the admin vouched for."""
    return [pki_dir(data_dir), *vouched_root_dirs(data_dir)]


def emulated_roots_version(data_dir: Path | None) -> RootsVersion:
    """A cheap fingerprint (three ``stat`` calls) of the emulated roots under ``data_dir``.

    The emulated backend creates each TEE's directory complete and renames it into place, and
    the enrolment mirror does the same with vouched roots (touching their parent), so the roots
    :func:`emulated_roots_in` would read change only when this changes.
    """
    if data_dir is None:
        return ()
    base = os.fspath(pki_dir(data_dir))
    out: list[tuple[int, int] | None] = []
    for path in (os.path.join(base, "snp"), os.path.join(base, "tdx"), os.fspath(vouched_dir(data_dir))):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns))
    return tuple(out)


def _anchors(root: Path, local: bool) -> EmulatedAnchors | None:
    """The anchors in ``root``; a damaged vouched copy is skipped (logged), a damaged local one raises."""
    try:
        return read_anchors_in(root)
    except EmulatedPkiError:
        if local:
            raise
        _log.warning("vouched emulated roots in %s are unreadable; ignored until the next enrolment refresh", root)
        return None


def emulated_roots_in(data_dir: Path | None) -> EmulatedRoots:
    """The emulated roots under ``data_dir``: its backends' own and the vouched hosts'.

    Returns :data:`NO_EMULATED_ROOTS` when ``data_dir`` is None or holds no emulated PKI.
    """
    if data_dir is None:
        return NO_EMULATED_ROOTS
    snp: list[str] = []
    tdx: list[str] = []
    for index, root in enumerate(_root_dirs(data_dir)):
        if not root.is_dir():
            continue
        anchors = _anchors(root, local=index == 0)
        if anchors is None:
            continue
        if anchors.snp_ark_pem is not None and anchors.snp_ask_pem is not None:
            snp.append(anchors.snp_ark_pem + anchors.snp_ask_pem)
        if anchors.tdx_root_ca_pem is not None:
            tdx.append(anchors.tdx_root_ca_pem)
    return EmulatedRoots(snp_roots_pem="".join(snp).encode() if snp else None,
                         tdx_root_pem="".join(tdx).encode() if tdx else None)


def emulated_tdx_collateral_in(data_dir: Path | None) -> dict[str, dict[str, TdxCollateral]]:
    """DCAP collateral of each emulated TDX platform under ``data_dir``: root CA fingerprint → FMSPC → collateral.

    The emulated backend issues it (valid 30 days) and reissues it daily; a vouched host's is the
    copy its enrolment carried. Empty when there is no emulated TDX platform or nothing published.
    """
    if data_dir is None:
        return {}
    out: dict[str, dict[str, TdxCollateral]] = {}
    for index, root in enumerate(_root_dirs(data_dir)):
        anchors = _anchors(root, local=index == 0) if root.is_dir() else None
        if anchors is None or anchors.tdx_root_ca_pem is None:
            continue
        collateral = read_tdx_collateral_in(root)
        if collateral:
            certificate = x509.load_pem_x509_certificate(anchors.tdx_root_ca_pem.encode())
            out[certificate.fingerprint(hashes.SHA256()).hex()] = collateral
    return out
