"""Returning freed heap to the system: what the long-running processes run every few seconds."""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from pathlib import Path

import pytest

from ccpipe.pipeline import heap
from ccpipe.pipeline.heap import release_free_heap, releasing_free_heap


def _rss_kib() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])


def test_freed_holes_in_a_thread_arena_go_back_to_the_system() -> None:
    # What the KBS's appraisal threads leave: many 64 KiB-sized chunks freed in a worker thread's arena,
    # every other one still live, so the arena's top cannot shrink and glibc keeps the holes.
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    kept: list[int] = []

    def fragment() -> None:
        chunks = [libc.malloc(100_000) for _ in range(1_500)]
        for i, p in enumerate(chunks):
            ctypes.memset(p, 1, 100_000)  # touched: resident
            if i % 2:
                libc.free(p)
            else:
                kept.append(p)

    worker = threading.Thread(target=fragment)
    worker.start()
    worker.join()
    before = _rss_kib()
    assert release_free_heap()
    after = _rss_kib()
    for p in kept:
        libc.free(p)
    # ~70 MiB of free holes were resident; at least half of it is given back
    assert before - after > 35_000, (before, after)


def test_the_rounds_run_on_a_thread_while_the_block_is_open_and_stop_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def counted() -> bool:
        calls.append(time.monotonic())
        return True

    monkeypatch.setattr(heap, "release_free_heap", counted)
    with releasing_free_heap(0.05) as trimmer:
        assert trimmer.thread is not None and trimmer.thread.daemon
        time.sleep(0.4)
    assert trimmer.thread is not None and not trimmer.thread.is_alive()
    done = len(calls)
    assert done >= 3
    time.sleep(0.2)
    assert len(calls) == done  # nothing after the block closed


def test_zero_turns_it_off_and_async_with_works(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def counted() -> bool:
        calls.append(time.monotonic())
        return True

    monkeypatch.setattr(heap, "release_free_heap", counted)

    async def run() -> None:
        async with releasing_free_heap(0) as off:
            assert off.thread is None
        async with releasing_free_heap(0.05) as on:
            assert on.thread is not None
            await asyncio.sleep(0.2)

    asyncio.run(run())
    assert calls
