"""The evidence family of errors: what the formats of :mod:`ccpipe.evidence` raise, and its base.

Each leaf is named for what failed and carries a stable dotted code (``tee.…``: the codes predate
this package and are part of the wire format of ``failed`` events, so they keep their prefix).
:class:`~ccpipe.schemas.errors.InvalidInput` leaves are final (malformed bytes, a bad initdata
document, report data that does not fit its field); :class:`HostDataMismatch` is final too;
:class:`EmulatedPkiError` (damaged emulated roots, read here and written by the backends) is configuration.

The binary parsers (:mod:`.snp_report`, :mod:`.tdx_quote`, :mod:`.snp_evidence`) raise
:class:`MalformedEvidence` and :class:`UnsupportedEvidence` only, so a verifier can map those two
onto its own family. The evidence backends (``ccpipe.enclave_runner.tee``) derive their own
leaves (device, firmware, configuration) from :class:`TeeError`.

Imports only :mod:`ccpipe.schemas`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput


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


class HostDataMismatch(TeeError):
    """A hardware report carries different launch data (HOST_DATA / MRCONFIGID) than expected."""

    code = "tee.host_data.mismatch"
    default_hint = (
        "the enclave was launched with other initdata than this workload's; relaunch it with the right initdata"
    )


class InvalidInitdata(TeeError, InvalidInput):
    """An initdata document is not the TOML shape CoCo defines (version, algorithm, [data])."""

    code = "tee.initdata.invalid"
    default_hint = "build initdata with make_initdata() or follow CoCo's initdata TOML format"


class EmulatedPkiError(TeeError, ConfigurationError):
    """The emulated endorsement keys and certificates under the data directory are unusable."""

    code = "tee.emulated.pki"
    default_hint = "fix the permissions named in the message, or delete the directory to generate a new emulated root"
