"""Child processes that must not outlive their parent (KBS workers, audit ingest workers)."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when ``parent`` dies; exit now if it already has.

    For a worker process's start (e.g. a ``ProcessPoolExecutor`` initializer): a SIGKILLed
    parent cannot stop its children, and orphaned workers would keep a port or sit blocked
    forever. Linux only; elsewhere it does nothing.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
