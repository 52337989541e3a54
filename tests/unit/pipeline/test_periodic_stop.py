"""A background loop stops even when its cancellation is swallowed on the way (as nats-py's flush does)."""

from __future__ import annotations

import asyncio
import contextlib

from ccpipe.pipeline.periodic import cancel_and_wait, in_background, stop_if_cancelled


async def swallowing_publish() -> None:
    """Like nats-py's ``Client._flush_pending``: a cancellation that lands here is swallowed."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0.05)


async def test_a_loop_whose_cancellation_is_swallowed_still_stops() -> None:
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await swallowing_publish()
            rounds += 1
            stop_if_cancelled()

    async with in_background(loop(), "swallowing"):
        await asyncio.sleep(0.12)
    stopped_at = rounds
    await asyncio.sleep(0.15)
    assert rounds == stopped_at


async def test_a_task_that_ignores_every_cancellation_is_left_within_the_limit() -> None:
    done = asyncio.Event()

    async def stubborn() -> None:
        while not done.is_set():
            await swallowing_publish()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)  # inside its first "publish"
    start = asyncio.get_running_loop().time()
    await cancel_and_wait(task, timeout_s=0.3)
    assert asyncio.get_running_loop().time() - start < 2.0 and not task.done()
    done.set()
    await asyncio.wait_for(task, 1.0)
