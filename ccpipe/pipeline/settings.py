"""Load :class:`ccpipe.schemas.config.Settings` from the environment, refusing bad values up front."""

from __future__ import annotations

from pydantic import ValidationError

from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError


def load_settings(**overrides: object) -> Settings:
    """Settings from ``CCPIPE_*`` variables (and explicit overrides).

    Raises :class:`ConfigurationError` naming the variable whose value is wrong.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        var = "CCPIPE_" + str(first["loc"][0]).upper() if first["loc"] else "CCPIPE_*"
        raise ConfigurationError(
            f"{var} is invalid: {first['msg']}", hint=f"fix or unset {var}", code="config.env.invalid"
        ) from exc
