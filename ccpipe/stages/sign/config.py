"""Configuration of the sign stage (``CCPIPE_SIGN_*``) and where its keys live.

* The pipeline's signing key: ``<data_dir>/keys/sign/cosign.key`` / ``cosign.pub`` (cosign's
  encrypted format; password ``CCPIPE_SIGN_KEY_PASSWORD``, empty by default, as cosign's
  ``COSIGN_PASSWORD=""``), created on first use.
* Keyless Sigstore (off by default): ``CCPIPE_SIGN_SIGSTORE_TRUST_CONFIG`` (a sigstore
  ``ClientTrustConfig`` JSON naming a private CA and log) and ``CCPIPE_SIGN_SIGSTORE_TOKEN_FILE``
  (the OIDC identity token). See :mod:`ccpipe.stages.sign.keyless`.
* Reference values: the launch measurement of the runner's enclave stack is registered unless
  ``CCPIPE_SIGN_REGISTER_MEASUREMENT=false``; ``CCPIPE_SIGN_LAUNCH_CONFIG`` is the runner's
  launch configuration (JSON) it is computed with.

Pure: no NATS, no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.build.config import load_prefixed

KBS_REPOSITORY = "ccpipe"
"""The KBS resource repository of everything the sign stage registers: ``ccpipe/<workload>/<type>``."""
IMAGE_KEY_TYPE = "image-key"
COSIGN_PUBKEY_TYPE = "cosign-pubkey"


class SignConfig(BaseSettings):
    """Sign-stage settings; each field is the environment variable ``CCPIPE_SIGN_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CCPIPE_SIGN_", extra="ignore", frozen=True)

    key_password: str = Field(default="", repr=False, description="Password of the pipeline's cosign key.")
    keyless: bool = Field(default=False, description="Sign with Sigstore (Fulcio + Rekor) instead of the key.")
    sigstore_trust_config: Path | None = Field(
        default=None, description="sigstore ClientTrustConfig JSON (private CA, CT log and transparency log)."
    )
    sigstore_token_file: Path | None = Field(default=None, description="File holding the OIDC identity token.")
    register_measurement: bool = Field(default=True, description="Register the runner's launch measurement.")
    launch_config: str = Field(default="", description="The runner's launch configuration (JSON), if any.")

    @field_validator("launch_config")
    @classmethod
    def _json_or_empty(cls, v: str) -> str:
        if v:
            json.loads(v)  # a ValueError here becomes the ValidationError naming the variable
        return v

    def launch_config_value(self) -> bytes | dict[str, Any]:
        """The launch configuration as ``ccpipe.evidence.measurement`` takes it."""
        if not self.launch_config:
            return b""
        value = json.loads(self.launch_config)
        return value if isinstance(value, dict) else self.launch_config.encode()


def load_sign_config(**overrides: object) -> SignConfig:
    """The sign configuration from the environment (and explicit overrides).

    Raises :class:`ConfigurationError` naming the variable whose value is wrong, or when keyless
    signing is on without a trust configuration and a token file.
    """
    config = load_prefixed(SignConfig, "CCPIPE_SIGN_", overrides)
    if config.keyless and (config.sigstore_trust_config is None or config.sigstore_token_file is None):
        raise ConfigurationError(
            "keyless signing needs a Sigstore trust configuration and an identity token",
            hint="set CCPIPE_SIGN_SIGSTORE_TRUST_CONFIG and CCPIPE_SIGN_SIGSTORE_TOKEN_FILE "
            "(or unset CCPIPE_SIGN_KEYLESS)",
            code="sign.config.keyless",
        )
    return config


def signing_key_prefix(data_dir: Path) -> Path:
    """``<data_dir>/keys/sign/cosign``: the pipeline's key is ``cosign.key`` / ``cosign.pub`` there."""
    return data_dir / "keys" / "sign" / "cosign"


def resource_path(workload_id: str, kind: str) -> str:
    """The KBS resource path ``ccpipe/<workload_id>/<kind>`` (as the admin API takes it)."""
    return f"{KBS_REPOSITORY}/{workload_id}/{kind}"
