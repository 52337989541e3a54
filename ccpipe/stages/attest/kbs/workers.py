"""A standalone KBS on several processes sharing one port (``ccpipe kbs serve --workers N``).

Python runs one core per process, so a KBS that must use every core runs N worker processes,
each a whole KBS (its own NATS connection, HTTP server and RCAR over NATS), all bound to the
same port with ``SO_REUSEPORT``: the kernel spreads connections over them. Nothing of a
handshake lives in one worker (sealed session cookies; spent nonces, resources and events in
NATS; keys in the shared data directory), so consecutive requests may land on different
workers. The parent only starts the workers, reports the URL once all are serving, and stops
them together; if one dies the others are stopped and the parent exits non-zero, so a
supervisor (systemd, Kubernetes) restarts the whole KBS rather than leaving it half-sized.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import uvloop

from ccpipe.pipeline.children import die_with_parent
from ccpipe.pipeline.ports import http_url
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.attest.kbs.service import SESSION_TIMEOUT_S, Instrument, run_kbs
from ccpipe.stages.attest.kbs.worker_entry import start_worker

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs (picklable: it crosses into spawned processes)."""

    data_dir: Path
    nats_url: str
    host: str
    port: int
    allow_emulated: bool
    nats_creds: str | None = None
    nats_ca: str | None = None
    """CA bundle that signs the NATS server's certificate (TLS), or None."""
    session_timeout_s: float = SESSION_TIMEOUT_S
    inline_appraisal: bool = False
    """Appraise on the event loop instead of a thread (cheaper when every core has its own worker)."""
    auth_per_minute: int = 600
    """RCAR handshakes one client address may start per minute (0: no limit), in each worker."""
    instrument: Instrument | None = None
    """Adds routes to each worker's application (a module-level function: it is pickled)."""


def run_worker(cfg: WorkerConfig, ready: Any, parent: int) -> None:
    """Entry point of a worker process: serve until SIGTERM, report readiness on ``ready``."""
    die_with_parent(parent)  # a SIGKILLed 'ccpipe kbs serve' must not leave workers on its port

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with run_kbs(cfg.nats_url, cfg.data_dir, allow_emulated=cfg.allow_emulated, creds=cfg.nats_creds,
                               tls=ssl.create_default_context(cafile=cfg.nats_ca) if cfg.nats_ca else None,
                               host=cfg.host, port=cfg.port, reuse_port=True,
                               session_timeout_s=cfg.session_timeout_s, inline_appraisal=cfg.inline_appraisal,
                               auth_per_minute=cfg.auth_per_minute, instrument=cfg.instrument):
                gc.freeze()  # what start-up built lives as long as the worker: never scan it again
                ready.put(("ready", os.getpid(), ""))
                await stop.wait()
        except Exception as exc:  # reported to the parent, which names it
            ready.put(("failed", os.getpid(), f"{type(exc).__name__}: {exc}"))
            raise

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def reserve_port(host: str, port: int = 0) -> socket.socket:
    """A bound (not listening) ``SO_REUSEPORT`` socket on ``port`` (0: a free one): holds it for the workers.

    Raises :class:`ConfigurationError` when another program listens there, before any worker
    starts (a worker would otherwise fail with a traceback of its own).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="stop what listens there, or choose another --port (0 picks a free one)",
            code="kbs.port.unavailable",
        ) from None
    return sock


class WorkerPool:
    """N worker processes on one port; use as ``with WorkerPool(cfg, n) as url: ...``."""

    def __init__(self, cfg: WorkerConfig, workers: int) -> None:
        """Prepare ``workers`` (≥ 1) processes serving ``cfg``; port 0 picks a free one."""
        if workers < 1:
            raise ConfigurationError("--workers must be at least 1", code="kbs.workers.invalid")
        self.cfg, self.workers = cfg, workers
        self._ctx = multiprocessing.get_context("spawn")  # no fork: no inherited event loop or NATS socket
        self._procs: list[SpawnProcess] = []
        self._holder: socket.socket | None = None

    def __enter__(self) -> str:
        """Start every worker and wait until all serve; returns the URL.

        Raises :class:`ConfigurationError` naming the worker that failed to start.
        """
        self._holder = reserve_port(self.cfg.host, self.cfg.port)
        self.cfg = WorkerConfig(**{**self.cfg.__dict__, "port": self._holder.getsockname()[1]})
        ready = self._ctx.Queue()
        call = pickle.dumps((run_worker, self.cfg))  # opened in each worker once rego-cpp is loaded
        for _ in range(self.workers):
            proc = self._ctx.Process(target=start_worker, args=(call, ready, os.getpid()), daemon=True)
            proc.start()
            self._procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        started = 0
        while started < self.workers:
            try:
                state, pid, why = ready.get(timeout=0.2)
            except queue.Empty:
                dead = [p for p in self._procs if p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    what = (f"KBS worker {dead[0].pid} exited with status {dead[0].exitcode} while starting"
                            if dead else f"KBS workers did not start within {READY_TIMEOUT_S:.0f} s")
                    raise ConfigurationError(what, code="kbs.workers.start") from None
                continue
            if state != "ready":
                self.stop()
                raise ConfigurationError(f"KBS worker {pid} failed to start: {why}", code="kbs.workers.start")
            started += 1
        return http_url(self.cfg.host, self.cfg.port)

    def __exit__(self, *exc: object) -> None:
        """Stop every worker."""
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self._procs if p.pid is not None]

    def dead(self) -> list[int]:
        """Exit codes of workers that have stopped."""
        return [p.exitcode for p in self._procs if p.exitcode is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker, SIGKILL what is left after ``timeout`` seconds."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._procs.clear()
        if self._holder is not None:
            with contextlib.suppress(OSError):
                self._holder.close()
            self._holder = None


async def watch(pool: WorkerPool, stop: asyncio.Event, on_death: Callable[[list[int]], None]) -> None:
    """Return when ``stop`` is set or a worker dies (then ``on_death`` gets the exit codes)."""
    while not stop.is_set():
        codes = pool.dead()
        if codes:
            on_death(codes)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
