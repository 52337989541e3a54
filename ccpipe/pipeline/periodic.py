"""Background work of a long-running service: a round every few seconds, as a task that lives
as long as the service's block.

Stopping such a task must not depend on its cancellation arriving: nats-py swallows a
``CancelledError`` that lands while it hands a message to its flusher
(``Client._flush_pending``), so a loop cancelled in the middle of a publish went on forever
and whoever awaited it (a service stopping, a test's teardown) waited forever. Loops check
:func:`stop_if_cancelled` after each round, and :func:`cancel_and_wait` cancels again until
the task ends, within a bounded time.

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

_log = logging.getLogger("ccpipe.periodic")
STOP_TIMEOUT_S = 10.0
"""Longest :func:`cancel_and_wait` waits for a task to end."""
_RECANCEL_S = 0.5


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and the cancellation got lost.

    ``Task.cancelling()`` still counts a request whose ``CancelledError`` someone swallowed.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[Any], *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait until it ends, cancelling it again while it runs on, for at most ``timeout_s``.

    The task's own exception, if any, propagates; past the limit the task is left running and logged.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    task.cancel()
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            _log.warning("task %s did not stop within %.0f s of being cancelled", task.get_name(), timeout_s)
            return
        await asyncio.wait({task}, timeout=min(_RECANCEL_S, left))
        if not task.done():
            task.cancel()  # the last cancellation was swallowed on the way (see the module docstring)
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
        stop_if_cancelled()
        await asyncio.sleep(interval)


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``work`` as a task named ``name`` while the block is open; cancelled and awaited when it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await cancel_and_wait(task)
