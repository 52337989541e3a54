"""Hardware evidence through configfs-tsm, the Linux report interface of SEV-SNP and TDX guests.

``/sys/kernel/config/tsm/report/<entry>/`` (Documentation/ABI/testing/configfs-tsm-report):
``mkdir`` creates an entry whose attributes are ``inblob`` (write: the 64 bytes of report
data), ``outblob`` (read: the SNP report or the TDX quote), ``auxblob`` (read, SNP: the
certificate table the host supplied), ``provider`` (``sev_guest`` / ``tdx_guest``),
``privlevel`` (SNP VMPL) and ``generation``, a counter the kernel bumps on every write.

One request = one private entry: create it, remember ``generation``, write the inputs
(expecting one bump per write), read the outputs and check after each read that
``generation`` is still the expected value — otherwise another writer changed the inputs
between our write and our read and the output may belong to them
(:class:`ConcurrentReportWriter`, retried with a fresh entry). The entry is removed after.

File access goes through :class:`TsmFs`, so tests can run this code against a directory laid
out like configfs with the kernel's side effects simulated; ``report_dir`` is a parameter.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from ccpipe.enclave_runner.tee.errors import BackendUnavailable, ConcurrentReportWriter, DeviceError, UnknownProvider
from ccpipe.evidence.interface import (
    REPORT_DATA_SIZE,
    BackendInfo,
    EvidenceResult,
    check_host_data,
    pad_field,
)
from ccpipe.evidence.snp_evidence import SnpEvidence, parse_cert_table
from ccpipe.evidence.snp_report import parse_snp_report
from ccpipe.evidence.tdx_quote import TdxEvidence, parse_tdx_quote
from ccpipe.schemas.spec_rules import TeeType

DEFAULT_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
DEFAULT_CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
PROVIDERS = {"sev_guest": TeeType.SNP, "tdx_guest": TeeType.TDX}
_PRODUCTS = {TeeType.SNP: "AMD SEV-SNP", TeeType.TDX: "Intel TDX"}
_PERMANENT = {errno.ENOENT: "does not exist", errno.EACCES: "is not accessible", errno.EPERM: "is not permitted"}


class TsmFs(Protocol):
    """The four file operations configfs-tsm needs."""

    def mkdir(self, path: Path) -> None:
        """Create a report entry."""
        ...

    def rmdir(self, path: Path) -> None:
        """Remove a report entry."""
        ...

    def read(self, path: Path) -> bytes:
        """Read an attribute."""
        ...

    def write(self, path: Path, data: bytes) -> None:
        """Write an attribute (in one write call, as the kernel expects)."""
        ...


class OsTsmFs:
    """The real file system."""

    def mkdir(self, path: Path) -> None:
        """``mkdir(2)``."""
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        """``rmdir(2)``."""
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        """Read the whole attribute."""
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        """One ``write(2)`` of ``data``."""
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, f"short write to {path}")
        finally:
            os.close(fd)


class TsmReport(NamedTuple):
    """What one configfs-tsm request returned."""

    provider: str
    outblob: bytes
    auxblob: bytes | None


def _os_error(exc: OSError, what: str) -> Exception:
    if exc.errno in _PERMANENT:
        return BackendUnavailable(f"configfs-tsm {what} {_PERMANENT[exc.errno]}: {exc}")
    return DeviceError(f"configfs-tsm {what} failed: {exc}")


class ConfigfsTsmBackend:
    """Evidence from the kernel's configfs-tsm report interface (SEV-SNP or TDX guests)."""

    def __init__(
        self,
        report_dir: Path = DEFAULT_REPORT_DIR,
        *,
        fs: TsmFs | None = None,
        ccel_path: Path | None = DEFAULT_CCEL_PATH,
        privlevel: int | None = None,
        attempts: int = 3,
    ) -> None:
        """Use the configfs-tsm ``report`` directory ``report_dir``.

        ``ccel_path`` is the TDX CC event log sent with quotes (None: never); ``privlevel`` the
        SNP VMPL to request (None: the kernel's default); ``attempts`` how many fresh entries
        to try when a concurrent writer is detected.
        """
        self.report_dir = Path(report_dir)
        self._fs = fs or OsTsmFs()
        self._ccel_path = ccel_path
        self._privlevel = privlevel
        self._attempts = max(1, attempts)
        self._info: BackendInfo | None = None

    def _attribute(self, entry: Path, name: str) -> bytes:
        try:
            return self._fs.read(entry / name)
        except OSError as exc:
            raise _os_error(exc, f"attribute {name}") from exc

    def _generation(self, entry: Path) -> int:
        raw = self._attribute(entry, "generation")
        try:
            return int(raw.decode().strip())
        except ValueError as exc:
            raise DeviceError(f"configfs-tsm generation is not a number: {raw!r}") from exc

    def _read_checked(self, entry: Path, name: str, expected: int) -> bytes:
        data = self._attribute(entry, name)
        got = self._generation(entry)
        if got != expected:
            raise ConcurrentReportWriter(
                f"configfs-tsm generation was {got} while reading {name}, expected {expected}: "
                "another writer changed the report inputs"
            )
        return data

    def _write(self, entry: Path, name: str, data: bytes) -> None:
        try:
            self._fs.write(entry / name, data)
        except OSError as exc:
            raise _os_error(exc, f"write of {name}") from exc

    def request(self, inblob: bytes) -> TsmReport:
        """One report request in a fresh entry, with the generation checks (no retry).

        Raises :class:`ConcurrentReportWriter`, :class:`DeviceError`, :class:`BackendUnavailable`.
        """
        with self._entry("ccpipe") as entry:
            provider = self._attribute(entry, "provider").decode(errors="replace").strip()
            expected = self._generation(entry)
            if self._privlevel is not None and provider == "sev_guest":
                self._write(entry, "privlevel", str(self._privlevel).encode())
                expected += 1
            self._write(entry, "inblob", inblob)
            expected += 1
            outblob = self._read_checked(entry, "outblob", expected)
            auxblob = None
            if provider == "sev_guest":
                try:
                    auxblob = self._read_checked(entry, "auxblob", expected) or None
                except (BackendUnavailable, DeviceError):
                    # No certificates from the host (or a kernel without auxblob): the verifier
                    # fetches the VCEK itself. A concurrent writer is still detected above.
                    auxblob = None
            return TsmReport(provider, outblob, auxblob)

    @contextlib.contextmanager
    def _entry(self, prefix: str) -> Iterator[Path]:
        """A fresh, private report entry, removed afterwards."""
        entry = self.report_dir / f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            self._fs.mkdir(entry)
        except OSError as exc:
            raise _os_error(exc, f"report entry {entry}") from exc
        try:
            yield entry
        finally:
            with contextlib.suppress(OSError):  # a leaked entry only costs kernel memory
                self._fs.rmdir(entry)

    def _tee(self, provider: str) -> TeeType:
        if provider not in PROVIDERS:
            raise UnknownProvider(f"configfs-tsm provider {provider!r} is not supported (sev_guest, tdx_guest)")
        return PROVIDERS[provider]

    def describe(self) -> BackendInfo:
        """Hardware SEV-SNP or TDX, as the kernel's provider says (probes once with an empty entry)."""
        if self._info is None:
            with self._entry("ccpipe-probe") as entry:
                provider = self._attribute(entry, "provider").decode(errors="replace").strip()
            tee = self._tee(provider)
            self._info = BackendInfo(tee, "configfs-tsm", False, _PRODUCTS[tee])
        return self._info

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Evidence from the kernel for ``report_data`` (≤ 64 bytes, zero-padded).

        ``host_data`` is checked, not chosen: the report's HOST_DATA (SNP) or MRCONFIGID (TDX)
        must equal it zero-padded, else :class:`HostDataMismatch`. Raises
        :class:`ConcurrentReportWriter` after ``attempts`` tries, :class:`DeviceError`,
        :class:`UnknownProvider`, :class:`MalformedEvidence` if the kernel's output does not parse.
        """
        rd = pad_field(report_data, REPORT_DATA_SIZE, "report_data")
        for attempt in range(self._attempts):
            try:
                result = self.request(rd)
                break
            except ConcurrentReportWriter:
                if attempt + 1 == self._attempts:
                    raise
        tee = self._tee(result.provider)
        if tee is TeeType.SNP:
            report = parse_snp_report(result.outblob)
            check_host_data(report.host_data, host_data, "HOST_DATA")
            chain = parse_cert_table(result.auxblob) if result.auxblob else None
            evidence = SnpEvidence(report, chain or None).to_bytes()
            product = f"AMD SEV-SNP {report.product}" if report.product else _PRODUCTS[tee]
            bound = report.report_data
        else:
            quote = parse_tdx_quote(result.outblob)
            check_host_data(quote.td_body.mr_config_id, host_data, "MRCONFIGID")
            evidence = TdxEvidence(result.outblob, self._cc_eventlog()).to_bytes()
            product, bound = _PRODUCTS[tee], quote.td_body.report_data
        return EvidenceResult(tee, "configfs-tsm", False, product, evidence, bound)

    def _cc_eventlog(self) -> bytes | None:
        if self._ccel_path is None:
            return None
        try:
            return self._ccel_path.read_bytes() or None
        except OSError:
            return None  # no CCEL table (or not readable): the verifier then has RTMRs only
