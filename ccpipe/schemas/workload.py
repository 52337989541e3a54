"""The workload spec: the ``ccpipe.toml`` file a repository carries.

Parsed once, strictly: unknown keys, wrong types and unknown TEE types are refused with an
error that names the field (``build.copy[0].src``), never a traceback.
"""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ccpipe.schemas.digest import SHA256_ONLY, is_digest
from ccpipe.schemas.errors import InvalidInput

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class TeeType(StrEnum):
    """Trusted execution environments a workload may run on."""

    SNP = "snp"
    TDX = "tdx"
    SGX = "sgx"
    SAMPLE = "sample"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CopySpec(_Strict):
    """One file or directory copied from the repository into the image."""

    src: str = Field(description="Path inside the repository; a trailing slash copies a directory's contents.")
    dst: str = Field(description="Absolute destination path inside the image.")
    mode: str | None = Field(default=None, description="Octal permission bits, e.g. '0755'.")
    owner: str | None = Field(default=None, description="'uid:gid' of the copied entries (default 0:0).")

    @field_validator("src")
    @classmethod
    def _relative_src(cls, v: str) -> str:
        parts = v.replace("\\", "/").split("/")
        if v.startswith("/") or ".." in parts or not v.strip():
            raise ValueError("must be a relative path inside the repository, without '..'")
        return v

    @field_validator("dst")
    @classmethod
    def _absolute_dst(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError("must be an absolute path inside the image, without '..'")
        return v

    @field_validator("mode")
    @classmethod
    def _octal_mode(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"0?[0-7]{3,4}", v):
            raise ValueError("must be octal permission bits such as '0755'")
        return v

    @field_validator("owner")
    @classmethod
    def _uid_gid(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+:\d+", v):
            raise ValueError("must be numeric 'uid:gid' such as '0:0'")
        return v


class BuildRecipe(_Strict):
    """How the image is built (the ``[build]`` table)."""

    base: str = Field(default="scratch", description="'scratch', 'oci:PATH[:TAG]' or 'REGISTRY/REPO@sha256:…'.")
    entrypoint: list[str] = Field(default_factory=list, description="Image entrypoint.")
    cmd: list[str] = Field(default_factory=list, description="Image default arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables.")
    workdir: str = Field(default="/", description="Working directory.")
    user: str = Field(default="0:0", description="'uid:gid' the workload runs as.")
    labels: dict[str, str] = Field(default_factory=dict, description="OCI image labels.")
    copy_: list[CopySpec] = Field(default_factory=list, alias="copy", description="Files copied from the repository.")

    @field_validator("base")
    @classmethod
    def _known_base(cls, v: str) -> str:
        if v == "scratch" or v.startswith("oci:"):
            return v
        if "@" in v and is_digest(v.rsplit("@", 1)[1], SHA256_ONLY):
            return v
        raise ValueError("must be 'scratch', 'oci:PATH[:TAG]' or 'REGISTRY/REPO@sha256:<64 hex>'")


class TeeRequirements(_Strict):
    """Where the workload may run (the ``[tee]`` table)."""

    types: list[TeeType] = Field(min_length=1, description="TEE types this workload may run on.")
    allow_emulated: bool = Field(default=False, description="Accept emulated evidence (development only).")
    min_tcb: dict[str, int] = Field(
        default_factory=dict, description="Minimum TCB component versions, e.g. {snp = 21, microcode = 211}."
    )

    @field_validator("types", mode="before")
    @classmethod
    def _types_not_strict(cls, v: Any) -> Any:
        # Strict mode refuses plain strings for an enum; TOML only has strings.
        if isinstance(v, list):
            known = {t.value for t in TeeType}
            for i, item in enumerate(v):
                if item not in known:
                    raise ValueError(
                        f"item {i}: unknown TEE type {item!r}; known types: {', '.join(sorted(known))}"
                    )
            return [TeeType(x) for x in v]
        return v


class ReleasePolicy(_Strict):
    """Which key-release (resource) policy guards the workload's key (the ``[release]`` table)."""

    policy: str = Field(default="default", description="Name of the resource policy.")


class RunOptions(_Strict):
    """How the runner runs the workload (the ``[run]`` table)."""

    network: bool = Field(default=False, description="Give the workload the node's network (default: none).")


class WorkloadMeta(_Strict):
    """The ``[workload]`` table."""

    name: str = Field(description="Lower-case [a-z0-9-], unique per repository.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be lower-case letters, digits and '-', 1 to 63 characters, like 'hello'")
        return v


class WorkloadSpec(_Strict):
    """The whole ``ccpipe.toml``."""

    workload: WorkloadMeta
    build: BuildRecipe = Field(default_factory=BuildRecipe)
    tee: Annotated[TeeRequirements, Field(description="TEE requirements.")]
    release: ReleasePolicy = Field(default_factory=ReleasePolicy)
    run: RunOptions = Field(default_factory=RunOptions)


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("copy" if part == "copy_" else str(part))
    return out or "(top level)"


def describe_validation_error(exc: ValidationError, what: str, prefix: str = "") -> InvalidInput:
    """Turn a pydantic error into one :class:`InvalidInput` naming the first bad field."""
    first = exc.errors()[0]
    path = _field_path(((prefix,) if prefix else ()) + tuple(first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "required field is missing"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return InvalidInput(
        f"{what}: {path}: {msg}{more}",
        hint=f"fix {path} in {what}",
        code="spec.field.invalid" if first["type"] != "missing" else "spec.field.missing",
    )


def parse_workload_spec(text: str, *, source: str = "ccpipe.toml") -> WorkloadSpec:
    """Parse and validate a ``ccpipe.toml`` document.

    Raises :class:`InvalidInput` naming the file and the field (``tee.types``) on any problem.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(
            f"{source} is not valid TOML: {exc}", hint=f"fix the syntax of {source}", code="spec.toml.syntax"
        ) from exc
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc, source) from exc
