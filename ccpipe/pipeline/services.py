"""What is running and where: start the embedded servers, or find the ones already running.

``ccpipe up`` (and ``ccpipe demo``) own the embedded servers: they start them, write
``endpoints.json`` in the data directory and remove it on exit. Every other command finds
the servers through ``CCPIPE_NATS_URL`` / ``CCPIPE_REGISTRY`` or that file, and starts nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import bcrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccpipe.pipeline.locks import HeldLock, pid_alive, take_lock
from ccpipe.pipeline.nats_auth import embedded_tls, issue_embedded_identities
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.settings_rules import nats_servers

if TYPE_CHECKING:
    from ccpipe.oci.registry import Credentials
    from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedNatsCluster, EmbeddedRegistry


class Endpoints(BaseModel):
    """The URLs of what is running; also written to ``<data dir>/endpoints.json``."""

    model_config = ConfigDict(extra="ignore")

    nats_url: str = Field(description="NATS server URL.")
    nats_monitor_url: str | None = Field(default=None, description="nats-server monitoring endpoint.")
    nats_nodes: list[str] = Field(default_factory=list,
                                  description="Client URL of every embedded nats-server (several in a cluster).")
    registry: str | None = Field(default=None, description="OCI registry host:port.")
    kbs_url: str | None = Field(default=None, description="KBS base URL (RCAR over HTTP).")
    audit_api_url: str | None = Field(default=None, description="Audit HTTP API and web page.")
    embedded: bool = Field(default=False, description="True when ccpipe started these servers itself.")
    pid: int | None = Field(default=None, description="Process that owns the embedded servers.")
    started_at: datetime | None = None


def endpoints_file(settings: Settings) -> Path:
    """``<data dir>/endpoints.json``."""
    return settings.data_dir / "endpoints.json"


def find_endpoints(settings: Settings) -> Endpoints:
    """Where to reach the services, without starting anything.

    Raises :class:`ConfigurationError` when nothing is configured and nothing is running.
    """
    if settings.nats_url:
        return Endpoints(nats_url=settings.nats_url, nats_nodes=nats_servers(settings.nats_url),
                         registry=settings.registry, kbs_url=settings.kbs_url)
    path = endpoints_file(settings)
    if path.exists():
        eps = read_endpoints(path)
        if pid_alive(eps.pid):
            return eps
    raise ConfigurationError(
        f"no ccpipe services are running for data directory {settings.data_dir}",
        hint="start them with 'ccpipe up' in another terminal, or set CCPIPE_NATS_URL to a running NATS server",
        code="services.not_running",
    )


def read_endpoints(path: Path) -> Endpoints:
    """The endpoints ``ccpipe up`` published; raises :class:`ConfigurationError` if the file is damaged."""
    try:
        return Endpoints.model_validate_json(path.read_bytes())
    except (ValidationError, OSError) as exc:
        raise ConfigurationError(
            f"the data directory's {path.name} is damaged ({path})",
            hint="stop 'ccpipe up' if it runs, remove that file and start 'ccpipe up' again (it rewrites it)",
            code="services.endpoints.corrupt",
        ) from exc


@contextmanager
def _data_dir_lock(settings: Settings) -> Iterator[HeldLock]:
    lock = take_lock(
        settings.data_dir / "up.lock", f"another ccpipe already runs the embedded servers of {settings.data_dir}",
        hint="use that one (ccpipe endpoints), stop it, or set CCPIPE_DATA_DIR to another directory",
        code="services.locked",
    )
    try:
        yield lock
    finally:
        lock.release()


REGISTRY_ROLES = ("push", "pull")
"""The embedded registry's users: ``push`` for the deploy stage, ``pull`` for the build stage's bases and
the runners. docker-registry's htpasswd authenticates but has no per-user permissions, so the two differ
in who holds them (and in the registry's log), not in what the registry lets them do; what no credential
can do is delete (``storage.delete.enabled: false``)."""


def registry_password_file(data_dir: Path, role: str) -> Path:
    """``<data dir>/creds/registry-<role>.password``: the embedded registry's password for ``role``."""
    return data_dir / "creds" / f"registry-{role}.password"


def _bcrypt(password: str) -> str:
    # docker-registry's htpasswd takes bcrypt only. Cost 4: the password is 256 random bits, so the
    # hash's cost adds nothing against guessing, while the registry pays it on every request.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_registry_credentials(data_dir: Path) -> Path:
    """Make new passwords for the embedded registry's users; returns the htpasswd file to serve.

    Each password goes to :func:`registry_password_file` (0600, in a 0700 directory); the htpasswd
    file (bcrypt hashes) to ``<data dir>/registry/htpasswd``. New passwords at every start: one that
    leaked is good only until the next ``ccpipe up``.
    """
    creds = data_dir / "creds"
    creds.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = []
    for role in REGISTRY_ROLES:
        # hex: a URL-safe token may start with '-', which cosign, skopeo and crane read as an option
        password = secrets.token_hex(32)
        path = registry_password_file(data_dir, role)
        path.unlink(missing_ok=True)  # a fresh file, so the 0600 mode is the one it is created with
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        lines.append(f"ccpipe-{role}:{_bcrypt(password)}\n")
    htpasswd = data_dir / "registry" / "htpasswd"
    htpasswd.parent.mkdir(parents=True, exist_ok=True)
    htpasswd.write_text("".join(lines))
    return htpasswd


def registry_credentials(settings: Settings, role: str) -> Credentials | None:
    """The credentials for the pipeline's registry: the configured ones, else the embedded registry's
    ``role`` password when ccpipe runs that registry, else None (anonymous).

    Raises :class:`ConfigurationError` for a user without a readable password file.
    """
    # Imported here: the registry client is heavy, and the commands that only read the endpoints
    # (``ccpipe submit``, run by the git hook) never need it.
    from ccpipe.oci.registry import Credentials

    if settings.registry_username is not None:
        if settings.registry_password_file is None:
            raise ConfigurationError(
                "CCPIPE_REGISTRY_USERNAME is set but no password file is",
                hint="set CCPIPE_REGISTRY_PASSWORD_FILE to a file holding the password or token",
                code="deploy.registry.credentials",
            )
        return Credentials(settings.registry_username, _read_password(settings.registry_password_file))
    embedded = registry_password_file(settings.data_dir, role)
    if settings.registry is None and embedded.exists():
        return Credentials(f"ccpipe-{role}", _read_password(embedded))
    return None


def _read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the registry password file {path}: {exc.strerror}",
            hint="fix CCPIPE_REGISTRY_PASSWORD_FILE", code="deploy.registry.credentials",
        ) from exc


CLUSTER_SIZES = (3, 5)
"""Sizes of the loopback JetStream cluster ``ccpipe up --cluster N`` runs (odd: a majority survives a loss)."""


def _embedded_nats(settings: Settings, auth: str, cluster_size: int) -> EmbeddedNats | EmbeddedNatsCluster:
    """The embedded nats-server, or ``cluster_size`` of them routed to each other (not started)."""
    from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedNatsCluster

    if cluster_size == 1:
        return EmbeddedNats(settings.data_dir / "nats", binary=settings.nats_server_bin, auth=auth,
                            tls=embedded_tls(settings))
    if cluster_size not in CLUSTER_SIZES:
        raise ConfigurationError(f"a cluster of {cluster_size} nats-servers is not offered",
                                 hint=f"use --cluster {' or '.join(map(str, CLUSTER_SIZES))}",
                                 code="services.cluster.size")
    names = [f"ccpipe_n{i}" for i in range(1, cluster_size + 1)]
    # each node its own store (and store lock) under <data dir>/nats-cluster/<server name>
    return EmbeddedNatsCluster([
        EmbeddedNats(settings.data_dir / "nats-cluster" / name, binary=settings.nats_server_bin, auth=auth,
                     tls=embedded_tls(settings), server_name=name)
        for name in names
    ])


def _claim_ports(settings: Settings, nats: EmbeddedNats | EmbeddedNatsCluster) -> None:
    """Give each node its remembered client (and route) port, once it holds its store."""
    from ccpipe.pipeline.ports import cluster_port_key, stable_port
    from ccpipe.pipeline.servers import ClusterRoutes, EmbeddedNats

    if isinstance(nats, EmbeddedNats):
        nats.claim_store()  # first: a killed ccpipe's server may still hold the store and its port
        nats.port = stable_port(settings, "nats")
        return
    for node in nats.nodes:
        node.claim_store()
    routes = [stable_port(settings, cluster_port_key("route", i)) for i in range(1, len(nats.nodes) + 1)]
    for i, node in enumerate(nats.nodes):
        node.port = stable_port(settings, cluster_port_key("nats", i + 1))
        node.cluster = ClusterRoutes(routes[i], tuple(p for j, p in enumerate(routes) if j != i))


@contextmanager
def embedded_services(settings: Settings, runner_nodes: Iterable[str] = (), *,
                      cluster_size: int = 1, registries: list[EmbeddedRegistry] | None = None) -> Iterator[Endpoints]:
    """Start the servers that are not configured, publish ``endpoints.json``, stop them on exit.

    The embedded nats-server refuses clients without credentials: before it starts, every
    component's identity (and one per node of ``runner_nodes``) is issued into
    ``<data dir>/creds/`` (see :mod:`ccpipe.pipeline.nats_auth`). With ``cluster_size`` > 1
    that many nats-servers form a JetStream cluster on loopback instead of one server. The
    embedded registry, when one is started, is appended to ``registries`` (its retention needs it).
    """
    # the servers are imported where they start: commands that only read the endpoints (``ccpipe
    # submit``, run on every push) do not pay for their HTTP client and process control
    from ccpipe.pipeline.ports import stable_port
    from ccpipe.pipeline.servers import EmbeddedNatsCluster, EmbeddedRegistry

    started: list[EmbeddedNats | EmbeddedNatsCluster | EmbeddedRegistry] = []
    with _data_dir_lock(settings):
        try:
            nats_url, monitor = settings.nats_url, None
            nodes = nats_servers(nats_url) if nats_url else []
            if nats_url is None:
                nats = _embedded_nats(settings, issue_embedded_identities(settings, runner_nodes), cluster_size)
                started.append(nats)  # from here on it is stopped on exit, releasing the store
                _claim_ports(settings, nats)
                nats.start()
                nats_url, monitor = nats.url, nats.monitor_url
                nodes = [node.url for node in nats.nodes] if isinstance(nats, EmbeddedNatsCluster) else [nats.url]
            registry = settings.registry
            if registry is None:
                reg = EmbeddedRegistry(
                    settings.data_dir / "registry", binary=settings.registry_bin,
                    htpasswd=write_registry_credentials(settings.data_dir), port=stable_port(settings, "registry"),
                ).start()
                started.append(reg)
                registry = reg.address
                if registries is not None:
                    registries.append(reg)
            eps = Endpoints(
                nats_url=nats_url, nats_monitor_url=monitor, nats_nodes=nodes, registry=registry,
                kbs_url=settings.kbs_url, embedded=bool(started), pid=os.getpid(), started_at=datetime.now(UTC),
            )
            write_endpoints(settings, eps)
            yield eps
        finally:
            endpoints_file(settings).unlink(missing_ok=True)
            for server in reversed(started):
                server.stop()


def write_endpoints(settings: Settings, eps: Endpoints) -> None:
    """Atomically (re)write ``endpoints.json``."""
    path = endpoints_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(eps.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)
