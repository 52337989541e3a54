"""The attested build runner: build a pushed commit, then have the TEE vouch for the provenance.

:func:`attested_build` is what the build stage's handler calls for each ``submitted`` event:
:func:`~ccpipe.stages.build.core.build_from_repo` into the workload's image directory, then evidence
from the runner's TEE backend whose report_data is the provenance's SHA-384 (zero-padded to 64
bytes). The hardware (or emulated) signature over the report thus covers this exact provenance,
which names the image digest: the attestation service checks the binding before anything is
signed.

Also here: the demo base (:func:`ensure_demo_base`), a busybox image kept under the data
directory's bases folder, made on first use, which a recipe names as
:func:`demo_base_reference` returns.

Pure: no NATS. Imports the evidence backends' interface (:mod:`ccpipe.evidence.interface`), not the backends.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.errors import CcpipeError
from ccpipe.schemas.events import Built
from ccpipe.stages.build.base.busybox import make_busybox_base
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.core import BuildResult, build_from_repo
from ccpipe.stages.build.provenance import BUILDER_ID_TEE_RUNNER, statement_json

DEMO_BASE_NAME = "busybox"
"""Directory (under the bases folder) and tag of the demo base."""


def demo_base_reference(bases: Path) -> str:
    """The ``[build] base`` value naming the demo busybox base kept under ``bases``."""
    return f"oci:{bases / DEMO_BASE_NAME}:{DEMO_BASE_NAME}"


def ensure_demo_base(bases: Path, *, busybox: Path = Path("/bin/busybox")) -> Path:
    """Make the demo busybox base under ``bases`` unless it is there; returns its layout directory.

    Safe when several builders start at once (a lock file beside it). Raises
    ``BaseNotFound`` when the busybox binary is missing.
    """
    target = bases / DEMO_BASE_NAME
    bases.mkdir(parents=True, exist_ok=True)
    with (bases / f".{DEMO_BASE_NAME}.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "index.json").exists():
            try:
                OciLayout.open(target).resolve(DEMO_BASE_NAME)
                return target
            except CcpipeError:
                shutil.rmtree(target)  # half-written by a builder that died: written again (same bytes) below
        make_busybox_base(target, tag=DEMO_BASE_NAME, busybox=busybox)
    return target


def names_demo_base(base: str, bases: Path) -> bool:
    """Whether a recipe's ``base`` is the demo base under ``bases``."""
    prefix = f"oci:{bases / DEMO_BASE_NAME}"
    return base == prefix or base.startswith(prefix + ":")


def demo_base_preparer(bases: Path) -> Callable[[str], None]:
    """A ``prepare_base`` hook for :func:`build_from_repo`: makes the demo base when the recipe names it."""

    def prepare(base: str) -> None:
        if names_demo_base(base, bases):
            ensure_demo_base(bases)

    return prepare


@dataclass(frozen=True)
class AttestedBuild:
    """A build and the ``built`` payload describing it."""

    result: BuildResult
    built: Built


def attested_build(
    repo: Path | str,
    ref: str,
    out_dir: Path,
    *,
    backend: EvidenceBackend,
    commit: str | None = None,
    workload_id: str | None = None,
    bases: BaseSources | None = None,
    work_root: Path | None = None,
    demo_bases: Path | None = None,
    repository: str | None = None,
) -> AttestedBuild:
    """Build ``commit`` (or ``ref``) of ``repo`` into ``out_dir`` and attest the provenance.

    ``out_dir`` holds the plaintext image, so it is made (or made again) 0700: readable by this
    user only, until the sign stage removes it. The provenance's builder is
    :data:`BUILDER_ID_TEE_RUNNER`; the evidence binds ``result.report_data``. With ``demo_bases``,
    a recipe naming the demo base there gets it made first (:func:`ensure_demo_base`). ``repository``:
    the source as the provenance names it, when ``repo`` is a temporary copy (see :func:`build_from_repo`). Raises what
    :func:`build_from_repo` raises (``CheckoutFailed`` for an unreadable repository or ref, …) and
    the backend's ``TeeError`` leaves (``DeviceError`` is transient).
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out_dir.chmod(0o700)  # mkdir's mode is cut by the umask and ignored for a directory already there
    result = build_from_repo(
        repo,
        ref,
        out_dir,
        commit=commit,
        workload_id=workload_id,
        builder_id=BUILDER_ID_TEE_RUNNER,
        bases=bases,
        work_root=work_root,
        prepare_base=demo_base_preparer(demo_bases) if demo_bases is not None else None,
        repository=repository,
    )
    evidence = backend.get_evidence(result.report_data).to_event_evidence()
    built = Built(
        image_digest=result.image_digest,
        layout=str(result.layout),
        provenance=statement_json(result.provenance),
        provenance_digest=result.provenance_digest_str,
        runner_evidence=evidence,
    )
    return AttestedBuild(result, built)
