"""One runner node: what it is (TEE, evidence backend, limits) and how it starts an enclave.

"Starting the enclave" on this node means creating the evidence backend for the launch with
the workload's initdata digest as its launch data (SNP HOST_DATA, TDX MRCONFIGID): an emulated
backend puts it into its reports; a hardware backend (configfs-tsm, sev-guest) checks each
report carries it and refuses otherwise, since there the host set it when it started the VM.

Pure: no NATS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.enclave_runner.sandbox.limits import ResourceLimits
from ccpipe.enclave_runner.tee import select_backend
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.enclave_runner.unpack import UnpackLimits
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.evidence.measurement import Config, launch_measurement_for, tdx_measurements_for
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.spec_rules import TeeType

TEE_CHOICES = {
    "emulated-snp": "emulated-snp",
    "emulated-tdx": "emulated-tdx",
    "tsm": "configfs-tsm",
    "configfs-tsm": "configfs-tsm",
    "sev-guest": "sev-guest",
    "sample": "sample",
    "auto": "auto",
}
"""``ccpipe runner --tee`` values → evidence backends of :func:`ccpipe.enclave_runner.tee.select_backend`."""


@dataclass(frozen=True)
class RunnerNode:
    """A node's identity, evidence backend and the bounds of what it runs."""

    node_id: str
    tee: str = "emulated-snp"
    """A key of :data:`TEE_CHOICES`."""
    launch_config: Config = b""
    """The runner's launch configuration (measured by the emulated backends)."""
    measurement: bytes | None = None
    """Emulated SNP only: report this launch measurement instead of the computed one (tests)."""
    capacity: int = 2
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    unpack_limits: UnpackLimits = field(default_factory=UnpackLimits)
    workspace_bytes: int = 1 << 30
    """Room a launch needs in its workspace before tmpfs is chosen."""
    unprivileged_sandbox: bool = True
    """A root runner runs each sandbox as a fresh unassigned host uid (see ``sandbox.unprivileged_uid``)."""

    def backend_name(self) -> str:
        """The evidence backend name; raises :class:`ConfigurationError` for an unknown ``tee``."""
        try:
            return TEE_CHOICES[self.tee]
        except KeyError:
            raise ConfigurationError(
                f"unknown runner TEE {self.tee!r}", hint=f"choose one of: {', '.join(TEE_CHOICES)}",
                code="runner.tee.unknown",
            ) from None


@dataclass(frozen=True)
class Enclave:
    """A started enclave: its evidence backend and what the ``enclave.launched`` event says."""

    backend: EvidenceBackend
    tee: TeeType
    backend_name: str
    emulated: bool
    measurement_hex: str | None


def start_enclave(data_dir: Path, node: RunnerNode, initdata: str) -> Enclave:
    """The enclave of one launch, bound to ``initdata`` (see the module docstring).

    ``data_dir`` holds the emulated roots. Raises :class:`ConfigurationError` (unknown or
    absent backend) and the TEE family's errors.
    """
    backend, measurement = _backend(data_dir, node, initdata_digest(initdata))
    info = backend.describe()
    return Enclave(backend, info.tee, info.backend, info.emulated, measurement.hex() if measurement else None)


def join_backend(data_dir: Path, node: RunnerNode) -> EvidenceBackend:
    """The node's evidence backend with no launch data: what the node attests with to join the inventory."""
    return _backend(data_dir, node, b"")[0]


def _backend(root: Path, node: RunnerNode, host_data: bytes) -> tuple[EvidenceBackend, bytes | None]:
    """The node's evidence backend bound to ``host_data``, and the launch measurement an emulated one reports."""
    choice = node.backend_name()
    if choice == "emulated-snp":
        measurement = node.measurement or launch_measurement_for(node.launch_config)
        return EmulatedSnpBackend(root, config=node.launch_config, measurement=measurement,
                                  host_data=host_data), measurement
    if choice == "emulated-tdx":
        tdx = tdx_measurements_for(node.launch_config)
        return EmulatedTdxBackend(root, config=node.launch_config, measurements=tdx,
                                  mr_config_id=host_data), tdx.mr_td
    return select_backend(root, prefer=choice, config=node.launch_config, host_data=host_data), None
