"""Configuration of the build stage, and where its images live under the data directory.

:class:`BuildConfig` is read from ``CCPIPE_BUILD_*`` environment variables (beside the
project's :class:`ccpipe.schemas.config.Settings`); with nothing set the build runner takes its
evidence from the emulated SEV-SNP backend, whose roots live under the data directory.

Layout of the data directory that the build and sign stages share::

    <data_dir>/bases/                  base layouts an ``oci:/ABS/PATH`` base may name
    <data_dir>/bases/busybox           the demo base (tag ``busybox``), made on first use
    <data_dir>/images/<workload>/plain the image the build stage wrote (0700; deleted once signed)
    <data_dir>/images/<workload>/signed the encrypted, signed image (sign stage)

Pure: no NATS, no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccpipe.schemas.errors import ConfigurationError, InvalidInput

S = TypeVar("S", bound=BaseSettings)

TEE_BACKENDS = ("auto", "configfs-tsm", "sev-guest", "emulated-snp", "emulated-tdx", "sample")
"""What ``CCPIPE_BUILD_TEE_BACKEND`` accepts (``ccpipe.enclave_runner.tee.select_backend``'s ``prefer``)."""


class BuildConfig(BaseSettings):
    """Build-stage settings; each field is the environment variable ``CCPIPE_BUILD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CCPIPE_BUILD_", extra="ignore", frozen=True)

    tee_backend: str = Field(
        default="emulated-snp",
        description="Evidence backend of the build runner: auto, configfs-tsm, sev-guest, emulated-snp, "
        "emulated-tdx or sample. 'auto' uses the hardware when the machine is a TEE guest.",
    )
    bases_dir: Path | None = Field(
        default=None, description="Directory of base layouts recipes may name (default <data_dir>/bases)."
    )
    work_dir: Path | None = Field(
        default=None, description="Where checkouts are written while building (default: the system temp dir)."
    )

    @field_validator("tee_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in TEE_BACKENDS:
            raise ValueError(f"must be one of {', '.join(TEE_BACKENDS)}")
        return v


def load_prefixed(model: type[S], prefix: str, overrides: Mapping[str, object]) -> S:
    """``model`` (a ``BaseSettings`` read from ``<prefix>*`` variables) with explicit overrides.

    Raises :class:`ConfigurationError` naming the variable whose value is wrong.
    """
    try:
        return model(**overrides)  # type: ignore[arg-type]  # BaseSettings takes its fields as keywords
    except ValidationError as exc:
        first = exc.errors()[0]
        var = prefix + str(first["loc"][0]).upper() if first["loc"] else prefix + "*"
        raise ConfigurationError(
            f"{var} is invalid: {first['msg']}", hint=f"fix or unset {var}", code="config.env.invalid"
        ) from exc


def load_build_config(**overrides: object) -> BuildConfig:
    """The build configuration from ``CCPIPE_BUILD_*`` (and explicit overrides).

    Raises :class:`ConfigurationError` naming the variable whose value is wrong.
    """
    return load_prefixed(BuildConfig, "CCPIPE_BUILD_", overrides)


def bases_dir(data_dir: Path, config: BuildConfig | None = None) -> Path:
    """The directory under which absolute ``oci:`` bases are allowed."""
    if config is not None and config.bases_dir is not None:
        return config.bases_dir
    return data_dir / "bases"


def workload_image_dir(data_dir: Path, workload_id: str, kind: str) -> Path:
    """``<data_dir>/images/<workload_id>/<kind>`` (``plain`` or ``signed``).

    ``workload_id`` is an envelope-checked token (lower-case letters, digits, '-'), so it
    cannot lead out of the images directory; checked again here because this names a path.
    """
    if not workload_id or not all(c.isascii() and (c.isalnum() or c == "-") for c in workload_id):
        raise InvalidInput(f"workload id {workload_id!r} cannot name a directory", code="build.workload_id")
    return data_dir / "images" / workload_id / kind
