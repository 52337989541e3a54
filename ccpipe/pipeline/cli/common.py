"""Helpers shared by the CLI commands: output, connecting, the one error exit."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccpipe.pipeline.nats_auth import OBSERVER
from ccpipe.pipeline.quick_submit import import_nats_client
from ccpipe.pipeline.services import find_endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import InvalidInput

if TYPE_CHECKING:
    from nats.js import JetStreamContext


def output_dir(value: str, what: str) -> Path:
    """``value`` as a directory to write into: absent or a directory; raises :class:`InvalidInput`."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{what} {value} is a file, not a directory",
                           hint="give a new or existing directory", code="cli.output.not_a_directory")
    return path


def output_file_prefix(value: str, what: str) -> Path:
    """``value`` as the path of files to create: its directory must exist; raises :class:`InvalidInput`."""
    path = Path(value)
    if not path.absolute().parent.is_dir():
        raise InvalidInput(f"{what} {value}: the directory {path.absolute().parent} does not exist",
                           hint="create it first (mkdir -p), or give a path in an existing directory",
                           code="cli.output.no_directory")
    return path


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def say(text: str) -> None:
    """One line of human output to stdout, flushed (progress must show at once)."""
    print(text, flush=True)


@asynccontextmanager
async def jetstream(settings: Settings, name: str, identity: str = OBSERVER) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the running services as ``identity`` (read-only unless said otherwise),
    the stream checked."""
    eps = find_endpoints(settings)
    import_nats_client(eps.nats_url)
    from ccpipe.pipeline.bus import connect_as, provision_stream
    from ccpipe.pipeline.enrolment_bus import refresh_enrolments_once

    nc = await connect_as(settings, eps.nats_url, identity, name=name)
    try:
        js = nc.jetstream()
        await provision_stream(js)
        await refresh_enrolments_once(settings, js)  # what it reads is judged by the current enrolments
        yield js
    finally:
        await nc.close()
