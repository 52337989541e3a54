"""Background work of a long-running service: a round every few seconds, as a task that lives
as long as the service's block.

Imports no stage, no audit trail and no assembly (it is part of the runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from ccpipe.schemas.errors import CcpipeError


async def every(interval: float, round_: Callable[[], Awaitable[object]], log: logging.Logger, what: str) -> None:
    """Await ``round_()`` every ``interval`` seconds until cancelled; a failed round is logged
    (``<what> failed: …``) and the next one runs as planned."""
    while True:
        try:
            await round_()
        except CcpipeError as exc:
            log.warning("%s failed: %s", what, exc.one_line())
        except Exception:  # a bug must not stop the service for good
            log.exception("%s failed", what)
        await asyncio.sleep(interval)


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``work`` as a task named ``name`` while the block is open; cancelled and awaited when it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
