"""The evidence backends' own errors; their base, :class:`~ccpipe.evidence.errors.TeeError`, is shared
with the evidence formats (:mod:`ccpipe.evidence.errors`), so one ``except TeeError`` covers both.

Each leaf carries a stable dotted code (``tee.…``). The class decides what the stage runtime
does with it: leaves deriving from :class:`~ccpipe.schemas.errors.TransientError` are retried (a
busy kernel interface, a concurrent writer in configfs), :class:`~ccpipe.schemas.errors.ConfigurationError`
leaves are refused before anything starts (no such device, a damaged emulated key store).

Imports :mod:`ccpipe.schemas` and :mod:`ccpipe.evidence.errors`.
"""

from __future__ import annotations

from ccpipe.evidence.errors import TeeError
from ccpipe.schemas.errors import ConfigurationError, TransientError


class BackendUnavailable(TeeError, ConfigurationError):
    """The requested evidence backend cannot work on this machine (no device, no configfs-tsm)."""

    code = "tee.backend.unavailable"
    default_hint = "run on a TEE guest, or choose an emulated backend for development"


class UnknownProvider(TeeError, ConfigurationError):
    """configfs-tsm names a provider this code does not know (neither sev_guest nor tdx_guest)."""

    code = "tee.tsm.provider"
    default_hint = "only the sev_guest and tdx_guest configfs-tsm providers are supported"


class ConcurrentReportWriter(TeeError, TransientError):
    """The configfs-tsm generation changed under us: someone else wrote to our report entry."""

    code = "tee.tsm.generation"
    default_hint = "another process wrote to the same configfs-tsm entry; the request is retried"


class DeviceError(TeeError, TransientError):
    """The kernel interface (configfs-tsm, /dev/sev-guest) failed to produce a report."""

    code = "tee.device.io"
    default_hint = "the guest's attestation interface failed; it is retried, check dmesg if it persists"


class FirmwareError(TeeError):
    """The TEE firmware answered a report request with an error status."""

    code = "tee.firmware.status"
    default_hint = "the firmware refused the request; check the VMPL and the message's status code"
