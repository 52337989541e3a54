"""SLSA v1 provenance for an image the build stage made, and its digest for TEE report_data.

The statement's SHA-384 over its RFC 8785 bytes (:func:`provenance_digest`) is what the build
runner puts in its TEE report_data (:func:`report_data`): the hardware signature over the
report then vouches for this exact statement, as Kettle binds its provenance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.provenance import (
    CCPIPE_BUILD_TYPE,
    BuildDefinition,
    Builder,
    BuildMetadata,
    CcpipeBuildParameters,
    ResourceDescriptor,
    RunDetails,
    SlsaProvenance,
    Statement,
)

BUILDER_ID_LOCAL = "https://ccpipe.dev/builders/local/v1"
"""builder.id of a build run directly on a machine, outside any TEE (``ccpipe build``)."""
BUILDER_ID_TEE_RUNNER = "https://ccpipe.dev/builders/tee-runner/v1"
"""builder.id of the attested build runner; the handler passes it when it runs in a TEE."""

ARTIFACT_PREFIX = "ccpipe-artifact:"
"""``ccpipe.pipeline.artifacts.REF_PREFIX`` (a test keeps them equal): this pure core does not load the
NATS client that module needs."""


def _hex(digest: str) -> tuple[str, str]:
    alg, _, value = digest.partition(":")
    return alg, value


def repository_uri(repository: str, ref: str) -> str:
    """``git+<url>@<ref>`` as SLSA's examples spell a git dependency; local paths become file URLs.

    A source that travelled as a stored artifact (``ccpipe-artifact:…@sha256:…``, the pushed commit
    sealed to the build stage) is named by that reference itself: it says which bytes were read."""
    if repository.startswith(ARTIFACT_PREFIX):
        return repository
    if "://" not in repository:
        repository = Path(repository).absolute().as_uri()
    return f"git+{repository}@{ref}"


def make_provenance(
    *,
    image_name: str,
    image_digest: str,
    repository: str,
    ref: str,
    commit: str,
    recipe_path: str,
    tag: str | None,
    base_uri: str | None,
    base_digest: str | None,
    builder_id: str,
    invocation_id: str,
    started_on: datetime,
    finished_on: datetime,
    internal_parameters: Mapping[str, Any] | None = None,
    builder_version: Mapping[str, str] | None = None,
) -> Statement:
    """The in-toto Statement v1 + SLSA Provenance v1 of one build.

    ``subject`` is the image manifest digest; ``resolvedDependencies`` are the commit
    (``gitCommit``) and, unless the base is scratch, the base image manifest.
    """
    alg, value = _hex(image_digest)
    dependencies = [
        ResourceDescriptor(uri=repository_uri(repository, ref), digest={"gitCommit": commit}, name="source"),
    ]
    if base_digest is not None:
        balg, bvalue = _hex(base_digest)
        dependencies.append(
            ResourceDescriptor(
                name="base",
                uri=base_uri,
                digest={balg: bvalue},
                media_type="application/vnd.oci.image.manifest.v1+json",
            )
        )
    params = CcpipeBuildParameters(repository=repository, ref=ref, commit=commit, recipe_path=recipe_path, tag=tag)
    return Statement(
        subject=[ResourceDescriptor(name=image_name, digest={alg: value})],
        predicate=SlsaProvenance(
            build_definition=BuildDefinition(
                build_type=CCPIPE_BUILD_TYPE,
                external_parameters=params.model_dump(mode="json", by_alias=True, exclude_none=True),
                internal_parameters=dict(internal_parameters) if internal_parameters else None,
                resolved_dependencies=dependencies,
            ),
            run_details=RunDetails(
                builder=Builder(id=builder_id, version=dict(builder_version) if builder_version else None),
                metadata=BuildMetadata(invocation_id=invocation_id, started_on=started_on, finished_on=finished_on),
            ),
        ),
    )


def provenance_digest(statement: Statement) -> bytes:
    """SHA-384 (48 bytes) of the statement's RFC 8785 canonical JSON."""
    return hashlib.sha384(canonical_json(statement)).digest()


def report_data(statement: Statement) -> bytes:
    """The 64 bytes of TEE report_data binding ``statement``: its SHA-384, zero-padded."""
    return provenance_digest(statement).ljust(64, b"\0")


def statement_json(statement: Statement) -> dict[str, Any]:
    """The statement as JSON data (wire names), e.g. for the ``built`` event's payload."""
    data: dict[str, Any] = statement.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data
