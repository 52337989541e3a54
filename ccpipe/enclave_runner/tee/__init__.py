"""TEE evidence backends: one interface, hardware where there is some, emulation where not.

Usage::

    from ccpipe.enclave_runner.tee import select_backend

    backend = select_backend(data_dir, host_data=initdata_digest(initdata_text))
    result = backend.get_evidence(report_data)       # ccpipe.evidence.interface.EvidenceResult
    event_part = result.to_event_evidence()           # ccpipe.schemas.events.Evidence

Backends (:data:`BACKENDS`): ``configfs-tsm`` (SEV-SNP or TDX guest, Linux ≥ 6.7),
``sev-guest`` (``/dev/sev-guest``), ``emulated-snp``, ``emulated-tdx``, ``sample``.
``auto`` picks configfs-tsm when ``/sys/kernel/config/tsm/report`` exists, else
``/dev/sev-guest`` when it exists, else emulated SEV-SNP.

The formats the backends produce (SNP reports and evidence JSON, TDX quotes, certificate
extensions, initdata, launch measurements), their interface (:class:`EvidenceBackend`) and the
public half of the emulated roots are :mod:`ccpipe.evidence`'s, which the verifiers and the
build stage import instead of this package. The emulated TDX backend publishes its platform's
DCAP collateral there (:mod:`.emulated_tdx_collateral`).

Imports :mod:`ccpipe.schemas`, :mod:`ccpipe.evidence` and ``cryptography``; no network.
"""

from __future__ import annotations

from pathlib import Path

from ccpipe.enclave_runner.tee.configfs_tsm import DEFAULT_REPORT_DIR, ConfigfsTsmBackend
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.enclave_runner.tee.errors import BackendUnavailable
from ccpipe.enclave_runner.tee.sample import SampleBackend
from ccpipe.enclave_runner.tee.sev_guest import SEV_GUEST_DEVICE, SevGuestBackend
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.evidence.measurement import Config
from ccpipe.schemas.config import Settings

BACKENDS = ("auto", "configfs-tsm", "sev-guest", "emulated-snp", "emulated-tdx", "sample")
"""Values accepted by :func:`select_backend`'s ``prefer``."""


def hardware_backend(
    tsm_report_dir: Path = DEFAULT_REPORT_DIR, sev_guest_device: Path = SEV_GUEST_DEVICE
) -> str | None:
    """The hardware evidence backend this machine has (``configfs-tsm``, ``sev-guest``), or None: no TEE."""
    if tsm_report_dir.is_dir():
        return "configfs-tsm"
    if sev_guest_device.exists():
        return "sev-guest"
    return None


def select_backend(
    where: Settings | Path,
    *,
    prefer: str = "auto",
    config: Config = b"",
    host_data: bytes = b"",
    tsm_report_dir: Path = DEFAULT_REPORT_DIR,
    sev_guest_device: Path = SEV_GUEST_DEVICE,
) -> EvidenceBackend:
    """The evidence backend for this machine.

    ``where`` is the settings (their ``data_dir``) or the data directory itself, where the
    emulated roots are kept. ``config`` is the runner's launch configuration (measured by the
    emulated backends); ``host_data`` the launch's initdata digest for the emulated backends
    (SNP HOST_DATA / TDX MRCONFIGID; hardware backends check it per call instead). The two
    paths are parameters so tests can point them at a directory laid out like the real ones.

    Raises :class:`BackendUnavailable` for an unknown ``prefer`` or a hardware backend that is
    not present, and whatever the chosen backend's constructor raises.
    """
    data_dir = where.data_dir if isinstance(where, Settings) else Path(where)
    choice = prefer
    if choice == "auto":
        choice = hardware_backend(tsm_report_dir, sev_guest_device) or "emulated-snp"
    if choice == "configfs-tsm":
        if not tsm_report_dir.is_dir():
            raise BackendUnavailable(f"configfs-tsm is not available: {tsm_report_dir} does not exist")
        return ConfigfsTsmBackend(tsm_report_dir)
    if choice == "sev-guest":
        if not sev_guest_device.exists():
            raise BackendUnavailable(f"{sev_guest_device} does not exist: this is not an SEV-SNP guest")
        return SevGuestBackend(sev_guest_device)
    if choice == "emulated-snp":
        return EmulatedSnpBackend(data_dir, config=config, host_data=host_data)
    if choice == "emulated-tdx":
        return EmulatedTdxBackend(data_dir, config=config, mr_config_id=host_data)
    if choice == "sample":
        return SampleBackend()
    raise BackendUnavailable(
        f"unknown evidence backend {prefer!r}", hint=f"choose one of: {', '.join(BACKENDS)}", code="tee.backend.unknown"
    )


def ensure_emulated_roots(data_dir: Path) -> None:
    """Create this host's emulated SEV-SNP and TDX roots if missing and publish the TDX collateral,
    so ``ccpipe admin public-key`` can carry their public half to the admin (an emulating host's
    roots reach verifiers on other hosts only through its enrolment). Raises ``EmulatedPkiError``."""
    from ccpipe.enclave_runner.tee import emulated_tdx_collateral
    from ccpipe.enclave_runner.tee.emulated_pki import emulated_anchors, tdx_store

    emulated_anchors(data_dir, create=True)
    emulated_tdx_collateral.ensure_published(data_dir, str(tdx_store(data_dir).platform()["fmspc"]))


__all__ = [
    "BACKENDS",
    "ConfigfsTsmBackend",
    "EmulatedSnpBackend",
    "EmulatedTdxBackend",
    "SampleBackend",
    "SevGuestBackend",
    "ensure_emulated_roots",
    "hardware_backend",
    "select_backend",
]
