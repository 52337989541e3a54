"""The workload spec: the ``ccpipe.toml`` file a repository carries.

Parsed once, strictly: unknown keys, wrong types and unknown TEE types are refused with an
error that names the field (``build.copy[0].src``), never a traceback.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.spec_rules import (
    TeeType,
    base_problem,
    copy_dst_problem,
    copy_mode_problem,
    copy_owner_problem,
    copy_src_problem,
    name_problem,
    tee_type_problem,
)

_T = TypeVar("_T")


def _checked(value: _T, problem: str | None) -> _T:
    """``value``, or the rule's ``problem`` raised as the ValueError pydantic reports."""
    if problem is not None:
        raise ValueError(problem)
    return value


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
        return _checked(v, copy_src_problem(v))

    @field_validator("dst")
    @classmethod
    def _absolute_dst(cls, v: str) -> str:
        return _checked(v, copy_dst_problem(v))

    @field_validator("mode")
    @classmethod
    def _octal_mode(cls, v: str | None) -> str | None:
        return _checked(v, copy_mode_problem(v))

    @field_validator("owner")
    @classmethod
    def _uid_gid(cls, v: str | None) -> str | None:
        return _checked(v, copy_owner_problem(v))


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
        return _checked(v, base_problem(v))


class TeeRequirements(_Strict):
    """Where the workload may run (the ``[tee]`` table).

    The scheduler places by it and the KBS releases the workload's keys by it, both through
    :meth:`unmet`. ``min_tcb`` names components of the verified TCB: SEV-SNP ``bootloader``,
    ``tee``, ``snp``, ``microcode`` (and ``fmc`` on Turin); TDX ``tdx_module`` (TEE_TCB_SVN
    byte 0, the module's SVN), ``tdx_module_major`` (byte 1), ``pce_svn`` and ``tcb_up_to_date``
    (1 when the platform's TCB status is UpToDate); the sample TEE ``svn``.
    """

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
            for i, item in enumerate(v):
                _checked(item, tee_type_problem(i, item))
            return [TeeType(x) for x in v]
        return v

    def unmet(
        self, tee: TeeType | str | None, *, emulated: bool, tcb: Mapping[str, int], installation_allows_emulated: bool
    ) -> UnmetRequirement | None:
        """The first requirement a TEE of type ``tee`` (``emulated``, with ``tcb``) fails, or None.

        Emulated TEEs pass only when both this workload and the installation allow them.
        """
        if tee is None or tee not in {t.value for t in self.types}:
            wanted = "/".join(t.value for t in self.types)
            return UnmetRequirement("types", f"TEE {tee or 'of unknown type'} is not one of {wanted}")
        if emulated and not self.allow_emulated:
            return UnmetRequirement("allow_emulated", "the TEE is emulated and the workload does not allow emulation")
        if emulated and not installation_allows_emulated:
            return UnmetRequirement("allow_emulated", "the TEE is emulated and this installation refuses emulation")
        shortfall = tcb_satisfies(tcb, self.min_tcb)
        return UnmetRequirement("min_tcb", shortfall) if shortfall is not None else None


@dataclass(frozen=True)
class UnmetRequirement:
    """Which ``[tee]`` requirement a TEE fails (``types``, ``allow_emulated``, ``min_tcb``) and why."""

    requirement: str
    message: str


def tcb_satisfies(tcb: Mapping[str, int], minimum: Mapping[str, int]) -> str | None:
    """``None`` if every component of ``minimum`` is present in ``tcb`` at that version or higher.

    Otherwise a short reason naming the first component that is missing or too old. Each
    component is compared on its own, because TCB components are not ordered as a whole
    (a newer microcode does not make up for an older SNP firmware).
    """
    for component, wanted in sorted(minimum.items()):
        have = tcb.get(component)
        if have is None:
            return f"TCB has no {component} version (need >= {wanted})"
        if have < wanted:
            return f"TCB {component} {have} < {wanted}"
    return None


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
        return _checked(v, name_problem(v))


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


MAX_SPEC_BYTES = 1 << 20
"""The largest ``ccpipe.toml`` read (1 MiB): a spec describes a workload; data belongs in the repository."""


def parse_workload_spec(text: str, *, source: str = "ccpipe.toml") -> WorkloadSpec:
    """Parse and validate a ``ccpipe.toml`` document.

    Raises :class:`InvalidInput` naming the file and the field (``tee.types``) on any problem.
    """
    try:
        data = tomllib.loads(text)
        return WorkloadSpec.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(
            f"{source} is not valid TOML: {exc}", hint=f"fix the syntax of {source}", code="spec.toml.syntax"
        ) from exc
    except ValidationError as exc:
        raise describe_validation_error(exc, source) from exc
    except RecursionError:
        # tomllib recurses once per nested array or inline table: a few thousand levels exhaust
        # the stack, and no real spec nests more than a handful.
        raise InvalidInput(
            f"{source} nests arrays or tables too deeply to be a workload spec",
            hint="flatten it: a workload spec nests a few levels at most",
            code="spec.toml.depth",
        ) from None


def parse_workload_spec_bytes(raw: bytes, *, source: str = "ccpipe.toml") -> WorkloadSpec:
    """Parse a ``ccpipe.toml`` file as read from disk or git: at most :data:`MAX_SPEC_BYTES` of UTF-8.

    Raises :class:`InvalidInput` naming what is wrong (size, encoding, syntax, field).
    """
    if len(raw) > MAX_SPEC_BYTES:
        raise InvalidInput(
            f"{source} is larger than {MAX_SPEC_BYTES >> 20} MiB ({len(raw)} bytes)",
            hint="keep the workload spec small: put data in the repository's files and copy them with [[build.copy]]",
            code="spec.too_large",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{source} is not UTF-8 text (invalid byte at offset {exc.start})",
            hint="save the file as UTF-8, as TOML requires",
            code="spec.toml.encoding",
        ) from None
    return parse_workload_spec(text, source=source)
