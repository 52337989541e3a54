"""The embedded servers: a JetStream nats-server and a docker-registry on loopback.

Each runs as a child process with its state under the data directory, on the port it is given
(a free one by default), and is stopped on exit. A child gets SIGTERM from the kernel when the
process that started it dies (:func:`ccpipe.pipeline.children.parent_death_preexec`), so a
SIGKILLed ``ccpipe up`` leaves no server behind. A JetStream store is opened by one nats-server
only: its lock (``<root>/jetstream/store.lock``) is held by the process that started the server
and inherited by the server, so it stays held while either runs.

ccpipe refuses a nats-server older than 2.10: 2.9 silently ignores settings the pipeline
relies on (see ``docs/design/nats.md``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ccpipe.pipeline.children import parent_death_preexec
from ccpipe.pipeline.locks import HeldLock, take_lock
from ccpipe.schemas.errors import ConfigurationError, TransientError

MIN_NATS_VERSION = (2, 10, 0)
INSTALL_HINT = (
    "install a current Debian build with 'sudo scripts/install-system-deps.sh' "
    "(it fetches Debian's nats-server >= 2.10 and links it as /usr/local/bin/nats-server), "
    "or set CCPIPE_NATS_SERVER_BIN to a nats-server >= 2.10"
)


def parse_version(text: str) -> tuple[int, int, int]:
    """``'nats-server: v2.15.1'`` → ``(2, 15, 1)``; raises ValueError if there is none."""
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise ValueError(f"no version in {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def require_nats_version(version: tuple[int, int, int], where: str) -> None:
    """Refuse a server older than :data:`MIN_NATS_VERSION` with a message that says what to do."""
    if version < MIN_NATS_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_NATS_VERSION))
        raise ConfigurationError(
            f"{where} is nats-server {have}, but ccpipe needs {need} or newer "
            "(older servers silently ignore consumer filters, TTLs and sync settings)",
            hint=INSTALL_HINT,
            code="config.nats.too_old",
        )


def find_binary(name: str, what: str, hint: str) -> str:
    """Absolute path of ``name`` (a path or a command on PATH)."""
    path = name if os.sep in name else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise ConfigurationError(f"{what} binary {name!r} was not found", hint=hint, code="config.binary.missing")
    return path


def nats_binary_version(binary: str) -> tuple[int, int, int]:
    """Version of a nats-server binary, from ``--version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    try:
        return parse_version(out.stdout + out.stderr)
    except ValueError as exc:
        raise ConfigurationError(
            f"{binary} --version printed no version", hint=INSTALL_HINT, code="config.nats.version"
        ) from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http_ok(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, what: str, ready: tuple[int, ...] = (200,)
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ConfigurationError(
                f"{what} exited with status {proc.returncode} while starting",
                hint=f"see {log}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}",
                code="servers.start.failed",
            )
        # imported here: the bus imports this module for its version check, and a command that
        # only publishes (``ccpipe submit``) never waits for a server to start
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status in ready:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ready:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.05)
    raise TransientError(f"{what} did not become ready at {url} within {timeout:.0f} s", hint=f"see {log}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class _ChildServer:
    """Lifecycle shared by the embedded servers: one child process, stopped on exit."""

    _proc: subprocess.Popen[bytes] | None

    @staticmethod
    def _spawn(argv: list[str], out: int | IO[bytes], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        # Its own session, so a Ctrl-C in the terminal reaches only ccpipe, which stops the servers
        # in order; the parent-death signal stops them when ccpipe is killed and cannot.
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            preexec_fn=parent_death_preexec(), pass_fds=pass_fds,
        )

    def _exited(self) -> None:
        """Called once the child has ended (a server with a lock releases it here)."""

    @property
    def pid(self) -> int | None:
        """Process id of the running server."""
        return self._proc.pid if self._proc else None

    def kill(self) -> None:
        """SIGKILL the server (for crash and fault tests); ``start()`` again reuses its state."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None
        self._exited()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        self._exited()


@dataclass(frozen=True)
class ClusterRoutes:
    """A cluster node's routes: the port it listens on for its peers and the ports of those peers."""

    route_port: int
    peer_route_ports: tuple[int, ...]
    name: str = "ccpipe"


@dataclass
class EmbeddedNats(_ChildServer):
    """A nats-server with JetStream on 127.0.0.1 (``port``, or a free one), state under ``root``."""

    root: Path
    binary: str = "nats-server"
    port: int = 0
    url: str = ""
    monitor_url: str = ""
    version: tuple[int, int, int] = (0, 0, 0)
    auth: str = ""
    """Configuration block that turns authentication on (operator and account JWTs); empty = none."""
    tls: tuple[Path, Path] | None = None
    """(certificate, key) the server presents to every client; None = plain TCP."""
    server_name: str = "ccpipe_embedded"
    """Unique in a cluster (JetStream names its peers by it)."""
    cluster: ClusterRoutes | None = None
    """This node's place in a loopback cluster; None = a single server."""
    _proc: subprocess.Popen[bytes] | None = None
    _store_lock: HeldLock | None = None

    def _tls_block(self) -> str:
        if self.tls is None:
            return ""
        cert, key = self.tls
        return f"tls {{\n  cert_file: {json.dumps(str(cert))}\n  key_file: {json.dumps(str(key))}\n}}\n"

    def start(self, timeout: float = 20.0) -> EmbeddedNats:
        """Start the server and wait until JetStream answers.

        Raises ConfigurationError if it cannot, and (naming the holder) if another nats-server
        started by ccpipe has the same store open.
        """
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> EmbeddedNats:
        """Start the server process without waiting for it (a cluster node waits for its peers).

        Raises ConfigurationError for a missing or too old binary or a store open elsewhere.
        """
        binary = find_binary(self.binary, "nats-server", INSTALL_HINT)
        self.version = nats_binary_version(binary)
        require_nats_version(self.version, binary)
        store_lock = self.claim_store()
        store = self.root / "jetstream"
        port, mport = self.port or free_port(), free_port()
        conf = self.root / "nats-server.conf"
        conf.write_text(
            "# written by ccpipe for the embedded default; regenerated at every start\n"
            f"server_name: {self.server_name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mport}\n"
            f"max_payload: 8MB\njetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
            + self._cluster_block() + self.auth + self._tls_block()
        )
        conf.chmod(0o600)  # holds the account JWT; nothing secret, but nobody else's business
        try:
            # the server inherits the store's lock: it stays held while the server runs, even orphaned
            self._proc = self._spawn([binary, "-c", str(conf), "-l", str(self.log)], subprocess.DEVNULL,
                                     pass_fds=(store_lock.fd,))
        except BaseException:
            self._exited()
            raise
        store_lock.share_with("nats-server", self._proc.pid)
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self.monitor_url = f"http://127.0.0.1:{mport}"
        return self

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.root / "nats-server.log"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the launched server's JetStream answers (in a cluster: once it has a meta leader)."""
        assert self._proc is not None, "launch() first"
        # a single server is ready once JetStream is on; a cluster node once its JetStream is current
        health = "/healthz" if self.cluster else "/healthz?js-enabled-only=true"
        try:
            _wait_http_ok(f"{self.monitor_url}{health}", self._proc, self.log, timeout,
                          f"nats-server {self.server_name}")
        except BaseException:
            self.stop()
            raise

    def _cluster_block(self) -> str:
        if self.cluster is None:
            return ""
        routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in self.cluster.peer_route_ports)
        # routes only on loopback, so the cluster port needs no authorization of its own here
        return (f"cluster {{\n  name: {self.cluster.name}\n  listen: 127.0.0.1:{self.cluster.route_port}\n"
                f"  routes: [{routes}]\n}}\n")

    def claim_store(self) -> HeldLock:
        """Take the JetStream store's lock (``start`` does, if it was not taken before).

        Before choosing a port, a restart takes it first: the server of a killed ccpipe may
        still be stopping, holding the lock and its port. Raises ConfigurationError naming the
        holder if another nats-server has the store open.
        """
        if self._store_lock is None:
            store = self.root / "jetstream"
            store.mkdir(mode=0o700, parents=True, exist_ok=True)  # as nats-server makes it: the trail is in there
            self._store_lock = take_lock(
                store / "store.lock", f"the JetStream store {store} is open in another nats-server",
                hint="stop that ccpipe (or its nats-server) first: two servers on one store corrupt it",
                code="servers.nats.store_locked",
                wait_for_dying_s=15.0,  # the server of a killed ccpipe, stopping on its parent-death signal
            )
        return self._store_lock

    def _exited(self) -> None:
        if self._store_lock is not None:
            self._store_lock.release()
            self._store_lock = None


@dataclass
class EmbeddedNatsCluster:
    """Several :class:`EmbeddedNats` nodes routed to each other on loopback: one JetStream cluster.

    Each node has its own store (``<root>/<server name>``) and lock, its own client and route port.
    They are launched together and waited for together: a node's JetStream is current only once
    a majority of the nodes elected a meta leader.
    """

    nodes: list[EmbeddedNats]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (a ``CCPIPE_NATS_URL`` value)."""
        return ",".join(node.url for node in self.nodes)

    @property
    def monitor_url(self) -> str:
        """The first node's monitoring endpoint."""
        return self.nodes[0].monitor_url

    def start(self, timeout: float = 30.0) -> EmbeddedNatsCluster:
        """Launch every node, then wait until each has a current JetStream (stops them all if one fails)."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (the last one first)."""
        for node in reversed(self.nodes):
            node.stop()


@dataclass
class EmbeddedRegistry(_ChildServer):
    """A docker-registry (CNCF distribution) on 127.0.0.1, blobs under ``root``.

    No client can delete through it (``storage.delete.enabled: false``); images of ended workloads
    are removed by the process that started it (:mod:`ccpipe.pipeline.registry_gc`). With ``htpasswd``
    every request must carry Basic credentials of a user in that file (bcrypt hashes).
    """

    root: Path
    binary: str = "docker-registry"
    htpasswd: Path | None = None
    port: int = 0
    address: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    """Held by a maintenance (:mod:`ccpipe.pipeline.registry_gc`) and by :meth:`stop`: a stop waits
    for a garbage collection to restart the registry, then stops it, never the other way round."""

    @property
    def config_path(self) -> Path:
        """The configuration :meth:`start` writes (``garbage-collect`` reads the same storage from it)."""
        return self.root / "config.yml"

    @property
    def storage(self) -> Path:
        """Where the registry keeps blobs and repositories."""
        return self.root / "data"

    def stop(self) -> None:
        """Stop the registry (after a maintenance in progress has restarted it)."""
        with self.lock:
            super().stop()

    def start(self, timeout: float = 20.0) -> EmbeddedRegistry:
        """Start the registry and wait until ``/v2/`` answers."""
        binary = find_binary(
            self.binary, "docker-registry",
            "install it with 'sudo scripts/install-system-deps.sh' or set CCPIPE_REGISTRY",
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        conf = self.config_path
        auth = ""
        if self.htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: ccpipe\n    path: {json.dumps(str(self.htpasswd))}\n"
        conf.write_text(
            "# written by ccpipe for the embedded default; regenerated at every start\n"
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(self.storage))}\n"
            "  delete:\n    enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}"
        )
        log = self.root / "registry.log"
        with log.open("ab") as out:
            self._proc = self._spawn([binary, "serve", str(conf)], out)
        self.address = f"127.0.0.1:{self.port}"
        try:
            # with auth on, /v2/ answers 401 once the registry serves
            ready = (200, 401) if self.htpasswd else (200,)
            _wait_http_ok(f"http://{self.address}/v2/", self._proc, log, timeout, "docker-registry", ready)
        except BaseException:
            self.stop()
            raise
        return self
