"""Child processes that must not outlive their parent (embedded servers, KBS and audit workers).

A SIGKILLed parent runs no cleanup, so only the kernel can stop its children: each child asks
for a parent-death signal (``PR_SET_PDEATHSIG``) before it runs. Linux only; elsewhere these
functions do nothing.

The kernel sends that signal when the *thread* that forked the child exits, not the process:
a child started from a short-lived thread would be stopped with that thread. Hence
:func:`parent_death_preexec` gives a ``preexec_fn`` only on the main thread, which lives as long
as the process.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None where there is none."""
    import ctypes  # only where children are started: not on the path of commands that only connect

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when ``parent`` dies; exit now if it already has.

    For a worker process's start (e.g. a ``ProcessPoolExecutor`` initializer): a SIGKILLed
    parent cannot stop its children, and orphaned workers would keep a port or sit blocked
    forever.
    """
    prctl = _prctl()
    if prctl is not None:
        _request_parent_death_signal(prctl, parent)


def _request_parent_death_signal(prctl: Callable[..., int], parent: int) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that has the child SIGTERMed when this process dies.

    None off the main thread (see the module docstring) or where ``prctl`` is missing; the
    caller then starts the child without it (and stops it itself). ``prctl`` is looked up here,
    in the parent: between fork and exec the child must not load libraries or take locks
    another thread may have held at the fork.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def request() -> None:
        _request_parent_death_signal(prctl, parent)

    return request
