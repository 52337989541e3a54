"""Emulated roots of other hosts, vouched for by the installation's admin.

On one machine the verifiers read the emulated roots that the local backends made
(:mod:`ccpipe.evidence.emulated_roots`). Across machines each build runner and runner node makes
its own emulated roots in its own data directory, which the verifiers (attest, KBS) never see.
So a host's *public* emulated material travels in its enrolment: ``ccpipe admin public-key``
exports it (:func:`export_public_roots`), the admin signs it into the component's enrolment
record, and every verifier host's enrolment mirror writes the roots of in-force ``build`` and
``runner`` enrolments under ``<data_dir>/tee/vouched/<name>/`` (:func:`replace_vouched_roots`),
in the layout of :func:`~ccpipe.evidence.emulated_roots.pki_dir` without any private key. A
root that no admin-signed record carries is never trusted this way: a host cannot vouch for
itself, and a revoked enrolment's roots are removed at the next refresh.

The TDX part carries the collateral the emulated platform published when it was enrolled (valid
30 days from its issue; re-enrol the host to refresh it).

Pure file handling; raises :class:`~ccpipe.evidence.errors.EmulatedPkiError` for material that
cannot be exported and :class:`~ccpipe.schemas.errors.InvalidInput` for a file map that is not
one this module writes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ccpipe.evidence.emulated_roots import PLATFORM_FILE, pki_dir
from ccpipe.evidence.errors import EmulatedPkiError
from ccpipe.schemas.errors import InvalidInput

PUBLIC_FILE = re.compile(
    r"snp/(ark|ask|vcek)\.pem|snp/platform\.json"
    r"|tdx/(root-ca|pck-ca|pck|tcb-signing)\.pem|tdx/platform\.json"
    r"|tdx/collateral/[0-9a-f]{12}/(tcb_info\.json|qe_identity\.json|tcb_signing_chain\.pem|pck_crl\.der|root_crl\.der)"
)
"""The relative paths of the public emulated material; nothing else is exported or written (no key)."""
MAX_TOTAL_BYTES = 256 * 1024
"""A bound on one host's public material (it is ~15 KB), so a record cannot fill a disk."""
VOUCHED_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}-[A-Za-z0-9_-]{1,64}")
"""``<component>-<key id>``: one directory per enrolment that carries roots."""


def vouched_dir(data_dir: Path) -> Path:
    """Where the vouched roots of other hosts are kept on a verifier host."""
    return Path(data_dir) / "tee" / "vouched"


def export_public_roots(data_dir: Path) -> dict[str, str]:
    """The public emulated material under ``data_dir`` (relative path → base64), for an enrolment.

    Only complete TEE directories (their ``platform.json`` written) are exported; empty when
    there are none. Raises :class:`EmulatedPkiError` if a file cannot be read.
    """
    root = pki_dir(data_dir)
    files: dict[str, str] = {}
    for tee in ("snp", "tdx"):
        if not (root / tee / PLATFORM_FILE).is_file():
            continue
        for path in sorted((root / tee).rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or not PUBLIC_FILE.fullmatch(relative):
                continue
            try:
                files[relative] = base64.b64encode(path.read_bytes()).decode()
            except OSError as exc:
                raise EmulatedPkiError(f"cannot read the emulated material {path}: {exc.strerror}") from exc
    return files


def decode_public_roots(files: object, what: str) -> dict[str, bytes]:
    """The file map of :func:`export_public_roots`, checked and decoded.

    Raises :class:`InvalidInput` naming ``what`` for a file that is not public material, bad
    base64, a map past :data:`MAX_TOTAL_BYTES` or one without a ``platform.json``.
    """
    if not isinstance(files, Mapping) or not files:
        raise InvalidInput(f"{what}: the emulated roots are not a non-empty map of files",
                           code="enrolment.roots.invalid")
    decoded: dict[str, bytes] = {}
    for name, value in files.items():
        if not isinstance(name, str) or not PUBLIC_FILE.fullmatch(name):
            raise InvalidInput(f"{what}: {str(name)[:80]!r} is not a public emulated root file",
                               hint="only certificates, platform.json and TDX collateral are carried, never keys",
                               code="enrolment.roots.invalid")
        try:
            decoded[name] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"{what}: {name} is not base64", code="enrolment.roots.invalid") from exc
    if sum(len(v) for v in decoded.values()) > MAX_TOTAL_BYTES:
        raise InvalidInput(f"{what}: the emulated roots exceed {MAX_TOTAL_BYTES} bytes",
                           code="enrolment.roots.invalid")
    if not any(name.endswith(PLATFORM_FILE) for name in decoded):
        raise InvalidInput(f"{what}: the emulated roots hold no platform.json", code="enrolment.roots.invalid")
    return decoded


def replace_vouched_roots(data_dir: Path, roots: Mapping[str, Mapping[str, bytes]]) -> bool:
    """Make ``<data_dir>/tee/vouched`` hold exactly ``roots`` (name → decoded file map); True if it changed.

    Each directory is written complete beside its place and renamed in, so a verifier reading at
    the same time sees a host's roots whole or not at all. Names and paths are checked again here.
    """
    base = vouched_dir(data_dir)
    existing = {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")} if base.is_dir() else set()
    changed = False
    for name in existing - set(roots):
        shutil.rmtree(base / name, ignore_errors=True)
        changed = True
    for name, files in roots.items():
        if not VOUCHED_NAME.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a vouched root name", code="enrolment.roots.invalid")
        if name in existing and _same_files(base / name, files):
            continue
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
        for relative, data in files.items():
            if not PUBLIC_FILE.fullmatch(relative):
                shutil.rmtree(staging, ignore_errors=True)
                raise InvalidInput(f"{relative!r} is not a public emulated root file", code="enrolment.roots.invalid")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        old = base / f".{name}.old-{os.getpid()}"
        if (base / name).exists():
            (base / name).rename(old)
        staging.rename(base / name)
        shutil.rmtree(old, ignore_errors=True)
        changed = True
    if changed and base.is_dir():
        os.utime(base)  # the verifiers' cheap change check stats this directory
    return changed


def _same_files(directory: Path, files: Mapping[str, bytes]) -> bool:
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    return all((directory / name).read_bytes() == data for name, data in files.items())


def vouched_root_dirs(data_dir: Path) -> list[Path]:
    """The vouched hosts' root directories (each laid out as :func:`~ccpipe.evidence.emulated_roots.pki_dir`)."""
    base = vouched_dir(data_dir)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
