"""The TEE family of errors: everything ``ccpipe.enclave_runner.tee`` raises.

Each leaf is named for what failed and carries a stable dotted code (``tee.…``). The class
decides what the stage runtime does with it: leaves deriving from
:class:`~ccpipe.schemas.errors.TransientError` are retried (a busy kernel interface, a concurrent
writer in configfs), :class:`~ccpipe.schemas.errors.InvalidInput` leaves are final (malformed bytes),
:class:`~ccpipe.schemas.errors.ConfigurationError` leaves are refused before anything starts (no such
device, a damaged emulated key store).

The binary parsers (:mod:`.snp_report`, :mod:`.tdx_quote`) raise :class:`MalformedEvidence`
and :class:`UnsupportedEvidence` only, so a verifier can map those two onto its own family.

Imports only :mod:`schemas`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput, TransientError


class TeeError(CcpipeError):
    """Base of every error raised by the TEE evidence backends and parsers."""

    code = "tee.error"
    default_hint = "see the message for what the TEE interface refused"


class MalformedEvidence(TeeError, InvalidInput):
    """Bytes are not a report/quote/evidence document of the expected shape (truncated, bad JSON…)."""

    code = "tee.evidence.malformed"
    default_hint = "pass the evidence exactly as the TEE produced it"


class UnsupportedEvidence(TeeError, InvalidInput):
    """Well-formed evidence of a version or kind this code does not handle (e.g. an SGX quote as TDX)."""

    code = "tee.evidence.unsupported"
    default_hint = "check the TEE type and the report/quote version named in the message"


class InvalidReportData(TeeError, InvalidInput):
    """The report_data (or host data) passed to a backend does not fit the TEE's field."""

    code = "tee.report_data.invalid"
    default_hint = "pass at most 64 bytes of report_data (32 bytes of SNP host data, 48 of TDX MRCONFIGID)"


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


class HostDataMismatch(TeeError):
    """A hardware report carries different launch data (HOST_DATA / MRCONFIGID) than expected."""

    code = "tee.host_data.mismatch"
    default_hint = (
        "the enclave was launched with other initdata than this workload's; relaunch it with the right initdata"
    )


class EmulatedPkiError(TeeError, ConfigurationError):
    """The emulated endorsement keys and certificates under the data directory are unusable."""

    code = "tee.emulated.pki"
    default_hint = "fix the permissions named in the message, or delete the directory to generate a new emulated root"


class InvalidInitdata(TeeError, InvalidInput):
    """An initdata document is not the TOML shape CoCo defines (version, algorithm, [data])."""

    code = "tee.initdata.invalid"
    default_hint = "build initdata with make_initdata() or follow CoCo's initdata TOML format"
