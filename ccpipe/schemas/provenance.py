"""Build provenance: an in-toto Statement v1 with an SLSA Provenance v1 predicate.

Shapes follow in-toto/attestation ``spec/v1`` (Statement, ResourceDescriptor) and
slsa-framework/slsa ``spec/build-provenance.md`` (v1). Field names on the wire are camelCase
(``_type`` for the statement type); models are frozen and refuse unknown fields, so what a
verifier parses is exactly what the spec defines. Timestamps are UTC, whole seconds,
``YYYY-MM-DDThh:mm:ssZ``.

:class:`CcpipeBuildParameters` is the ``externalParameters`` of ccpipe's own build type
(:data:`CCPIPE_BUILD_TYPE`): the complete set of inputs a ccpipe build takes from outside.

Imports nothing of the project.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from pydantic.alias_generators import to_camel

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1: Final = "https://slsa.dev/provenance/v1"
CCPIPE_BUILD_TYPE = "https://ccpipe.dev/build-types/oci-image/v1"
"""buildType of an image built by ``ccpipe.stages.build`` from a git commit and its ``ccpipe.toml``."""

_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128, "sha1": 40, "gitCommit": (40, 64), "gitTree": (40, 64)}
_HEX_RE = re.compile(r"[0-9a-f]+")


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


def _utc_seconds(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("must carry a time zone (UTC)")
    return v.astimezone(UTC).replace(microsecond=0)


class ResourceDescriptor(_Model):
    """An artifact or input, identified by digest and/or URI (in-toto ResourceDescriptor v1)."""

    name: str | None = Field(default=None, description="Machine-readable name, e.g. a file name or image name.")
    uri: str | None = Field(default=None, description="Where the resource is, e.g. git+https://…@refs/heads/main.")
    digest: dict[str, str] | None = Field(
        default=None, description="Digest set: algorithm (sha256, gitCommit, …) to lower-case hex."
    )
    content: str | None = Field(default=None, description="The resource itself, base64-encoded (small resources).")
    download_location: str | None = Field(default=None, description="Where the resource can be downloaded from.")
    media_type: str | None = Field(default=None, description="Media type of the resource.")
    annotations: dict[str, Any] | None = Field(default=None, description="Further information about the resource.")

    @field_validator("digest")
    @classmethod
    def _hex_digests(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        for alg, value in v.items():
            want = _HEX_LENGTHS.get(alg)
            if want is None:
                continue
            lengths = want if isinstance(want, tuple) else (want,)
            if len(value) not in lengths or not _HEX_RE.fullmatch(value):
                raise ValueError(f"digest {alg!r} must be {' or '.join(map(str, lengths))} lower-case hex digits")
        return v

    @field_validator("content")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except binascii.Error as exc:
                raise ValueError("must be base64") from exc
        return v

    @model_validator(mode="after")
    def _identified(self) -> ResourceDescriptor:
        if not (self.uri or self.digest or self.content):
            raise ValueError("needs at least one of uri, digest or content")
        return self


class BuildDefinition(_Model):
    """What the build was asked to do: everything needed to repeat it."""

    build_type: str = Field(description="URI of the template that gives externalParameters their meaning.")
    external_parameters: dict[str, Any] = Field(description="Inputs from outside the builder; complete at SLSA L3.")
    internal_parameters: dict[str, Any] | None = Field(
        default=None, description="Settings the builder chose itself (not verified by consumers)."
    )
    resolved_dependencies: list[ResourceDescriptor] | None = Field(
        default=None, description="Artifacts fetched during the build: the source commit, the base image."
    )


class Builder(_Model):
    """The build platform that ran the build."""

    id: str = Field(description="URI of the builder; one per security mode (a TEE runner and a plain one differ).")
    builder_dependencies: list[ResourceDescriptor] | None = Field(
        default=None, description="The builder's own dependencies (runner image, tool versions)."
    )
    version: dict[str, str] | None = Field(default=None, description="Component versions of the builder.")


class BuildMetadata(_Model):
    """This particular run."""

    invocation_id: str | None = Field(default=None, description="Globally unique id of the run (the workload id).")
    started_on: datetime | None = Field(default=None, description="When the build started (UTC).")
    finished_on: datetime | None = Field(default=None, description="When the build finished (UTC).")

    @field_validator("started_on", "finished_on")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc_seconds(v)

    @field_serializer("started_on", "finished_on")
    def _rfc3339(self, v: datetime | None) -> str | None:
        return None if v is None else v.strftime("%Y-%m-%dT%H:%M:%SZ")

    @model_validator(mode="after")
    def _ordered(self) -> BuildMetadata:
        if self.started_on and self.finished_on and self.finished_on < self.started_on:
            raise ValueError("finishedOn is before startedOn")
        return self


class RunDetails(_Model):
    """Who ran the build, when, and what else it produced."""

    builder: Builder
    metadata: BuildMetadata | None = None
    byproducts: list[ResourceDescriptor] | None = Field(default=None, description="Logs and other outputs.")


class SlsaProvenance(_Model):
    """SLSA Provenance v1 predicate."""

    build_definition: BuildDefinition
    run_details: RunDetails


class Statement(_Model):
    """in-toto Statement v1 whose predicate is SLSA Provenance v1."""

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[ResourceDescriptor] = Field(min_length=1, description="What was built, matched by digest.")
    predicate_type: Literal["https://slsa.dev/provenance/v1"] = Field(default=SLSA_PROVENANCE_V1)
    predicate: SlsaProvenance

    @field_validator("subject")
    @classmethod
    def _subjects_have_digests(cls, v: list[ResourceDescriptor]) -> list[ResourceDescriptor]:
        for i, s in enumerate(v):
            if not s.digest:
                raise ValueError(f"subject[{i}] must have a digest")
        return v


class CcpipeBuildParameters(_Model):
    """``externalParameters`` of :data:`CCPIPE_BUILD_TYPE`: every input of a ccpipe build."""

    repository: str = Field(description="The git repository (path or URL) as given to the build.")
    ref: str = Field(description="The ref that was built, as given (refs/heads/main, a tag, a commit id).")
    commit: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$", description="The commit the ref resolved to.")
    recipe_path: str = Field(description="Path of the workload spec in the commit (ccpipe.toml).")
    tag: str | None = Field(default=None, description="Reference name of the image in the output layout.")
