"""Stable ports for the embedded services, remembered in the data directory.

A workload's initdata and key registrations name the KBS URL and the registry, and runner
nodes reconnect to the NATS URL they were given, so these must not change when ``ccpipe up``
restarts. Each embedded service therefore listens on one port per data directory: chosen free
at the first start, written to ``<data dir>/ports.json`` and reused at every later start. A
``CCPIPE_<SERVICE>_PORT`` setting picks the port instead (and is remembered too).

New ports are picked below the kernel's ephemeral range, so the outgoing connections of other
programs cannot take them between two starts.
"""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path

from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError

STABLE_PORTS: dict[str, tuple[str, str]] = {
    "nats": ("NATS server", "nats_port"),
    "registry": ("registry", "registry_port"),
    "kbs": ("KBS", "kbs_port"),
    "audit_api": ("audit API", "audit_api_port"),
}
"""Service key in ``ports.json`` → (what it is, for people; the :class:`Settings` field that picks it)."""

CLUSTER_NODES_MAX = 5
"""The most nats-servers ``ccpipe up --cluster`` runs; each node's ports are remembered like the others."""


def cluster_port_key(kind: str, node: int) -> str:
    """The ``ports.json`` key of a cluster node's client (``nats``) or ``route`` port, node counted from 1."""
    return f"nats_{node}" if kind == "nats" else f"nats_{kind}_{node}"


for _node in range(1, CLUSTER_NODES_MAX + 1):
    # no setting picks these: the first start chooses them, later starts reuse them
    STABLE_PORTS[cluster_port_key("nats", _node)] = (f"NATS cluster node {_node}", "")
    STABLE_PORTS[cluster_port_key("route", _node)] = (f"NATS cluster node {_node}'s route", "")

RELEASE_WAIT_S = 5.0
"""How long a remembered port may stay taken before the start is refused: the previous run's
servers, stopped by their parent-death signal, may still be closing it."""

_PICK_RANGE = (20000, 32767)


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
"""Listen addresses that mean "every interface": no client can connect to them as such."""


def http_url(listen_host: str, port: int) -> str:
    """The base URL of a server listening on ``listen_host:port``, as another host names it.

    A wildcard listener is named by this host's name (clients cannot connect to ``0.0.0.0``);
    an IPv6 literal is bracketed.
    """
    host = socket.gethostname() if listen_host in WILDCARD_HOSTS else listen_host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ports_file(data_dir: Path) -> Path:
    """``<data dir>/ports.json``: the port of each embedded service."""
    return data_dir / "ports.json"


def stable_port(settings: Settings, service: str, *, release_wait_s: float = RELEASE_WAIT_S) -> int:
    """The port ``service`` (a key of :data:`STABLE_PORTS`) listens on, free to bind on 127.0.0.1.

    The configured one, else the remembered one, else a new free one (then remembered). Raises
    :class:`ConfigurationError` naming the port and the setting when another program holds it,
    or when ``ports.json`` is damaged.
    """
    what, field = STABLE_PORTS[service]
    path = ports_file(settings.data_dir)
    remembered = _read(path)
    configured: int | None = getattr(settings, field) if field else None
    port = configured or remembered.get(service) or _pick_free_port(avoid=set(remembered.values()))
    if remembered.get(service) != port:
        _write(path, {**remembered, service: port})
    deadline = time.monotonic() + release_wait_s
    while not port_is_free(port):
        if time.monotonic() >= deadline:
            source = f"CCPIPE_{field.upper()}" if configured else f"remembered in {path}"
            setting = f"set CCPIPE_{field.upper()} to a free port" if field else f"remove it from {path}"
            raise ConfigurationError(
                f"port {port} of the embedded {what} ({source}) is taken by another program",
                hint=f"stop the program listening on 127.0.0.1:{port}, or {setting} "
                "(workloads signed with the old port then no longer launch)",
                code="services.port.taken",
            )
        time.sleep(0.1)
    return port


def port_is_free(port: int) -> bool:
    """True if a server could listen on ``127.0.0.1:port`` now (as servers do: with SO_REUSEADDR,
    so a connection of a stopped server lingering in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_free_port(avoid: set[int]) -> int:
    """A free port in :data:`_PICK_RANGE`, not one of ``avoid`` (another service's, perhaps not running now)."""
    low, high = _PICK_RANGE
    for _ in range(100):
        port = random.randint(low, high)
        if port not in avoid and port_is_free(port):
            return port
    with socket.socket() as s:  # a crowded range: any free port will do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        ports = {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(
            f"the data directory's {path.name} is damaged ({path})",
            hint="remove it and start 'ccpipe up' again (new ports are chosen; workloads signed before then "
            "no longer launch)",
            code="services.ports.corrupt",
        ) from exc
    return {k: v for k, v in ports.items() if 0 < v < 65536}


def _write(path: Path, ports: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
