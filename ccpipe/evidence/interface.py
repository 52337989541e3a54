"""The one interface of every evidence backend, and what it returns.

A backend turns up to 64 bytes of ``report_data`` (the KBS binding: SHA-384 of the canonical
runtime data) into evidence in the JSON form a Trustee-compatible verifier expects for its
TEE, and says what it is (:class:`BackendInfo`): hardware or emulated, TEE type, product.

Implementers MUST:

* zero-pad ``report_data`` to the TEE's 64-byte field (the sample TEE embeds it unpadded, as
  guest-components' sample attester does) and refuse more than 64 bytes
  (:class:`~ccpipe.evidence.errors.InvalidReportData`);
* treat ``host_data`` as the launch data the report must carry (SNP HOST_DATA, TDX MRCONFIGID:
  the initdata digest). Emulated backends put it in the report; hardware backends cannot
  choose it (the host set it at launch) and MUST refuse a report that carries different bytes
  (:class:`~ccpipe.evidence.errors.HostDataMismatch`);
* return evidence bytes that parse with this package's parsers (:mod:`.snp_evidence`,
  :mod:`.tdx_quote`).

The backends themselves are the node agent's (``ccpipe.enclave_runner.tee``); the build stage and
the KBS client use them through this interface only. Imports :mod:`ccpipe.schemas`, this
package's errors and the standard library.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ccpipe.evidence.errors import HostDataMismatch, InvalidReportData
from ccpipe.schemas.events import Evidence
from ccpipe.schemas.spec_rules import TeeType

REPORT_DATA_SIZE = 64


@dataclass(frozen=True)
class BackendInfo:
    """What produces the evidence."""

    tee: TeeType
    """TEE type of the evidence (snp, tdx, sample)."""
    backend: str
    """Where it comes from: ``configfs-tsm``, ``sev-guest``, ``emulated`` or ``sample``."""
    emulated: bool
    """True when no hardware TEE signs it (emulated and sample backends)."""
    product: str
    """Human-readable platform, e.g. ``AMD SEV-SNP Genoa`` or ``emulated Intel TDX``."""


@dataclass(frozen=True)
class EvidenceResult:
    """Evidence produced by a backend, with the description of that backend."""

    tee: TeeType
    backend: str
    emulated: bool
    product: str
    evidence: bytes
    """The evidence JSON (UTF-8), exactly what goes into RCAR ``tee-evidence.primary_evidence``."""
    report_data: bytes
    """The report_data as bound in the evidence (64 bytes, zero-padded; sample: as given)."""

    def evidence_json(self) -> dict[str, Any]:
        """The evidence as a JSON object."""
        value = json.loads(self.evidence)
        if not isinstance(value, dict):
            raise TypeError("evidence is not a JSON object")
        return value

    def to_event_evidence(self) -> Evidence:
        """The :class:`ccpipe.schemas.events.Evidence` payload fragment events carry."""
        return Evidence(
            tee=self.tee,
            backend=self.backend,
            emulated=self.emulated,
            evidence=base64.b64encode(self.evidence).decode(),
            report_data=self.report_data.hex(),
        )


@runtime_checkable
class EvidenceBackend(Protocol):
    """A source of TEE evidence."""

    def describe(self) -> BackendInfo:
        """What this backend is; cheap after the first call."""
        ...

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Evidence binding ``report_data`` (≤ 64 bytes) and, where the TEE has it, ``host_data``.

        Raises :class:`~ccpipe.evidence.errors.TeeError` leaves: ``InvalidReportData``,
        ``HostDataMismatch``, ``DeviceError`` (retried), ``FirmwareError``.
        """
        ...


class BackendSelector(Protocol):
    """Picks the evidence backend of this machine (``ccpipe.enclave_runner.tee.select_backend``).

    A stage that produces evidence takes one of these from the assembly rather than importing
    the node agent's backends: the stage depends on this interface, the backends implement it.
    """

    def __call__(self, where: Path, /, *, prefer: str) -> EvidenceBackend:
        """The backend named by ``prefer`` (``auto`` to detect one); emulated roots live under ``where``."""
        ...


def pad_field(data: bytes, size: int, what: str) -> bytes:
    """``data`` zero-padded to ``size``; raises :class:`InvalidReportData` if it is longer."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidReportData(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > size:
        raise InvalidReportData(f"{what} is {len(data)} bytes; the field holds at most {size}")
    return bytes(data).ljust(size, b"\0")


def check_host_data(actual: bytes, expected: bytes | None, field: str) -> None:
    """For hardware backends: refuse a report whose launch data differs from ``expected``.

    ``expected`` is zero-padded to the field; None skips the check. Raises
    :class:`HostDataMismatch` (or :class:`InvalidReportData` if ``expected`` is too long).
    """
    if expected is None:
        return
    want = pad_field(expected, len(actual), field)
    if actual != want:
        raise HostDataMismatch(f"the report's {field} is {actual.hex()}, expected {want.hex()}")
