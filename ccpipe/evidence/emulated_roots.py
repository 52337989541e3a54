"""The emulated development roots as an installation stores them: their layout and public material.

The emulated backends (``ccpipe.enclave_runner.tee.emulated_pki``) generate these roots, keep
their private keys, and publish the emulated TDX platform's DCAP collateral; a verifier whose
policy allows emulated evidence reads the *public* half only::

    <data_dir>/tee/emulated/snp/ ark.pem ask.pem vcek.pem platform.json   (+ private keys)
    <data_dir>/tee/emulated/tdx/ root-ca.pem pck-ca.pem pck.pem tcb-signing.pem platform.json
                                 collateral/<fmspc>/   (a DCAP collateral directory)

Why here and not with the verifiers' vendor anchors (``stages/attest/verifiers/anchors``): those
are files shipped with ccpipe, whereas these are made per installation by the node agent's
backends and read by the verifiers, so the layout has two users that may not import each other.
It lives beside the evidence formats, which both already import. Nothing here creates a root or
reads a private key.

Raises :class:`~ccpipe.evidence.errors.EmulatedPkiError` when stored material is unreadable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ccpipe.evidence.dcap_collateral import TdxCollateral, load_collateral_dir
from ccpipe.evidence.errors import EmulatedPkiError

PLATFORM_FILE = "platform.json"
"""Written last when a TEE's roots are created: its presence means the directory is complete."""


def pki_dir(data_dir: Path) -> Path:
    """Where the emulated roots of an installation live."""
    return Path(data_dir) / "tee" / "emulated"


def tdx_collateral_dir(data_dir: Path) -> Path:
    """Where the emulated TDX platform's collateral is published (a DCAP collateral directory)."""
    return pki_dir(data_dir) / "tdx" / "collateral"


@dataclass(frozen=True)
class EmulatedAnchors:
    """The emulated trust anchors, for a verifier whose policy allows emulated evidence.

    Load them as their own trust anchor set, never merged into AMD's or Intel's roots. A field is
    None when that TEE's roots have not been created yet.
    """

    snp_ark_pem: str | None
    """SEV-SNP: the emulated ARK (self-signed root of ASK → VCEK)."""
    snp_ask_pem: str | None
    """SEV-SNP: the emulated ASK (intermediate; also sent in the evidence's cert_chain)."""
    tdx_root_ca_pem: str | None
    """TDX: the emulated SGX Root CA (root of the PCK chain and of the TCB Signing certificate)."""
    tdx_tcb_signing_pem: str | None
    """TDX: the emulated TCB Signing certificate that signs TCB info and QE identity."""


def _certificate_pem(path: Path) -> str:
    """The certificate at ``path`` re-encoded as PEM (so a damaged file is refused here, not later)."""
    # imported here: ``ccpipe submit`` reaches this module only for its file names (through the
    # enrolment records' roots), and cryptography.x509 is a large part of what a submit would cost
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EmulatedPkiError(f"emulated certificate {path} is unreadable: {exc}") from exc
    return cert.public_bytes(Encoding.PEM).decode()


def read_emulated_anchors(data_dir: Path) -> EmulatedAnchors:
    """The emulated roots already created under ``data_dir`` (absent TEEs' fields are None)."""
    return read_anchors_in(pki_dir(data_dir))


def read_anchors_in(root: Path) -> EmulatedAnchors:
    """The emulated roots in ``root``, a directory laid out as :func:`pki_dir` (absent TEEs' fields are None).

    Also what a verifier reads of another host's roots that the admin vouched for
    (:mod:`ccpipe.evidence.enrolled_roots`), which keep the same layout without the private keys.
    """
    snp, tdx = root / "snp", root / "tdx"

    def pem(directory: Path, stem: str) -> str | None:
        if not (directory / PLATFORM_FILE).is_file():
            return None
        return _certificate_pem(directory / f"{stem}.pem")

    return EmulatedAnchors(
        snp_ark_pem=pem(snp, "ark"),
        snp_ask_pem=pem(snp, "ask"),
        tdx_root_ca_pem=pem(tdx, "root-ca"),
        tdx_tcb_signing_pem=pem(tdx, "tcb-signing"),
    )


def read_emulated_tdx_collateral(data_dir: Path) -> dict[str, TdxCollateral]:
    """The published collateral of the emulated TDX platform under ``data_dir``, keyed by its FMSPC.

    Empty when there is no emulated TDX platform or it has published no collateral yet.
    """
    return read_tdx_collateral_in(pki_dir(data_dir))


def read_tdx_collateral_in(root: Path) -> dict[str, TdxCollateral]:
    """:func:`read_emulated_tdx_collateral` of ``root``, a directory laid out as :func:`pki_dir`."""
    platform = root / "tdx" / PLATFORM_FILE
    if not platform.is_file():
        return {}
    try:
        fmspc = str(json.loads(platform.read_text())["fmspc"]).lower()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmulatedPkiError(f"{platform} is not an emulated TDX platform: {exc}") from exc
    collateral = load_collateral_dir(root / "tdx" / "collateral", fmspc)
    return {} if collateral is None else {fmspc: collateral}
