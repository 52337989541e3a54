"""Launch measurements of the enclave stack the runner launches (its code and configuration).

An emulated TEE has no firmware to measure, so ccpipe defines the measurement of its own guest
image deterministically, and each runner release can publish the reference values:

* **listing** — one line per file of the ``enclave_runner`` package that a wheel ships
  (Python sources and the ``package-data`` kinds of ``pyproject.toml``: :data:`MEASURED_SUFFIXES`),
  sorted by path: ``<sha384 hex of the file>  enclave_runner/<posix path>\\n``. Bytecode,
  ``__pycache__`` and documentation are not measured, nor are file modes and times, so a
  checkout and an installed release measure the same;
* **config** — the runner's launch configuration as bytes (a mapping is serialized as RFC 8785
  canonical JSON, so key order does not matter);
* SEV-SNP ``MEASUREMENT`` = SHA-384("ccpipe/snp-launch/v1\\0" ‖ SHA-384(listing) ‖ SHA-384(config));
* TDX: ``MRTD`` = SHA-384("ccpipe/tdx-mrtd/v1\\0" ‖ SHA-384(listing)) (the TD's initial
  contents: the code); RTMRs are extended as TD firmware would: RTMR0 ← the emulated firmware
  identity, RTMR1 ← SHA-384(listing) (the loaded image), RTMR2 ← SHA-384(config) (its
  command line/configuration), RTMR3 untouched (runtime); extend(r, d) = SHA-384(r ‖ d),
  starting from 48 zero bytes.

The domain prefixes keep these values from colliding with each other or with anything else.

This is the one home of the format: the emulated backends (``ccpipe.enclave_runner.tee``) put
these values in their reports, the attestation stage and the sign stage publish them as
reference values. Imports :mod:`ccpipe.schemas` and the standard library.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpipe.schemas.canonical import canonical_json

_SNP_DOMAIN = b"ccpipe/snp-launch/v1\0"
_MRTD_DOMAIN = b"ccpipe/tdx-mrtd/v1\0"
_FIRMWARE_ID = b"ccpipe/emulated-tdvf/v1"
_EXCLUDED_DIRS = {"__pycache__"}
MEASURED_SUFFIXES = frozenset({".py", ".pem", ".der", ".rego", ".json", ".html", ".toml", ".sh"})
"""File kinds that make up the runner's code: what ``pyproject.toml`` installs with the package."""

Config = bytes | Mapping[str, Any]


RUNNER_PACKAGE = "ccpipe.enclave_runner"
"""The package whose files are the measured stack."""


def runner_package_dir() -> Path:
    """The directory of the ``enclave_runner`` package this process would run.

    Located with :func:`importlib.util.find_spec`, which finds the package without executing it:
    the runner's files are *data* to this module (the verifier and the sign stage compute
    reference values from them), so evidence formats do not import the node agent.
    """
    spec = importlib.util.find_spec(RUNNER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{RUNNER_PACKAGE} is not installed: there is no runner stack to measure")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def stack_listing(package_dir: Path | None = None) -> bytes:
    """The canonical listing of the package's files (see the module docstring)."""
    root = (package_dir or runner_package_dir()).resolve()
    lines = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or _EXCLUDED_DIRS & set(rel.parts) or path.suffix not in MEASURED_SUFFIXES:
            continue
        name = f"{root.name}/{rel.as_posix()}"
        lines.append((name.encode(), hashlib.sha384(path.read_bytes()).hexdigest()))
    lines.sort()
    return b"".join(f"{digest}  ".encode() + name + b"\n" for name, digest in lines)


def _config_bytes(config: Config) -> bytes:
    return config if isinstance(config, bytes) else canonical_json(dict(config))


def launch_measurement_for(config: Config = b"", *, package_dir: Path | None = None) -> bytes:
    """The 48-byte SEV-SNP launch measurement of the runner's stack with ``config``."""
    code = hashlib.sha384(stack_listing(package_dir)).digest()
    conf = hashlib.sha384(_config_bytes(config)).digest()
    return hashlib.sha384(_SNP_DOMAIN + code + conf).digest()


def rtmr_extend(register: bytes, digest: bytes) -> bytes:
    """One RTMR extension: SHA-384(register ‖ digest)."""
    return hashlib.sha384(register + digest).digest()


@dataclass(frozen=True)
class TdxMeasurements:
    """MRTD and RTMR0..3 of the emulated TD (48 bytes each)."""

    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]

    def reference_values(self) -> dict[str, str]:
        """Hex values under the names Trustee's default TDX policy queries (``mr_td``, ``rtmr_N``)."""
        out = {"mr_td": self.mr_td.hex()}
        out.update({f"rtmr_{i}": r.hex() for i, r in enumerate(self.rtmrs)})
        return out


def tdx_measurements_for(config: Config = b"", *, package_dir: Path | None = None) -> TdxMeasurements:
    """MRTD and RTMRs of the runner's stack with ``config`` (see the module docstring)."""
    code = hashlib.sha384(stack_listing(package_dir)).digest()
    conf = hashlib.sha384(_config_bytes(config)).digest()
    zero = bytes(48)
    return TdxMeasurements(
        mr_td=hashlib.sha384(_MRTD_DOMAIN + code).digest(),
        rtmrs=(
            rtmr_extend(zero, hashlib.sha384(_FIRMWARE_ID).digest()),
            rtmr_extend(zero, code),
            rtmr_extend(zero, conf),
            zero,
        ),
    )
