"""Keyless Sigstore signing (placeholder until the implementation lands)."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import ConfigurationError
from stages.sign.config import SignConfig
from stages.sign.cosign import Signer


def keyless_signer(config: SignConfig, *, data_dir: Path) -> tuple[Signer, bytes]:
    """Not yet available."""
    raise ConfigurationError("keyless signing is not available yet", code="sign.keyless.unavailable")
