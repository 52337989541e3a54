"""The rules of ccpipe's ``CCPIPE_*`` settings that need no model: the default data directory and NATS URLs.

:class:`ccpipe.schemas.config.Settings` (pydantic-settings) applies them to every variable;
``ccpipe submit`` reads the few variables it needs with them directly
(:mod:`ccpipe.pipeline.quick_submit`), since loading the settings model costs more than the rest
of a submit.
"""

from __future__ import annotations

from pathlib import Path

ENV_PREFIX = "CCPIPE_"
NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def default_data_dir() -> Path:
    """The per-user data directory (``~/.local/share/ccpipe`` on Linux)."""
    import platformdirs  # here: ``ccpipe submit`` from the git hook has CCPIPE_DATA_DIR set

    return Path(platformdirs.user_data_dir("ccpipe", appauthor=False))


def nats_servers(url: str) -> list[str]:
    """The server URLs in a ``CCPIPE_NATS_URL`` value: one, or several separated by commas."""
    return [part.strip() for part in url.split(",") if part.strip()]


def normal_nats_url(value: str) -> str:
    """``CCPIPE_NATS_URL`` as the settings keep it (servers joined by commas); raises ValueError for a bad one."""
    servers = nats_servers(value)
    if not servers or not all(url.startswith(NATS_SCHEMES) for url in servers):
        raise ValueError("each URL must start with nats://, tls://, ws:// or wss://")
    return ",".join(servers)
