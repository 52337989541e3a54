"""A JetStream cluster of nats-server nodes, one per stand-in machine of a :class:`Network` (test support).

Each node listens for clients, routes and monitoring on its machine's address, keeps its
JetStream store in its own data directory and routes to every other node. The configuration is
written here because ccpipe's own cluster writer (``ccpipe up --cluster``) runs nodes on
loopback in one machine; the settings mirror ``docs/design/nats.md``.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

from ccpipe.pipeline.servers import INSTALL_HINT, find_binary, nats_binary_version, require_nats_version
from ccpipe.schemas.config import Settings
from tests.multihost.netns import Machine, Network, Process

CLIENT_PORT = 4222
ROUTE_PORT = 6222
MONITOR_PORT = 8222
CLUSTER_NAME = "ccpipe_multihost"
START_TIMEOUT_S = 45.0


def nats_server_binary() -> str:
    """The nats-server the suite uses (``CCPIPE_NATS_SERVER_BIN``, default ``nats-server``), checked >= 2.10."""
    binary = find_binary(Settings().nats_server_bin, "nats-server", INSTALL_HINT)
    require_nats_version(nats_binary_version(binary), binary)
    return binary


@dataclass
class NatsNode:
    """One cluster node: its server name, machine and process."""

    name: str
    machine: Machine
    process: Process

    @property
    def url(self) -> str:
        """Client URL on its machine's address."""
        return f"nats://{self.machine.address}:{CLIENT_PORT}"

    @property
    def health_url(self) -> str:
        """Monitoring ``/healthz``: 200 once its JetStream is current with the cluster's meta leader."""
        return f"http://{self.machine.address}:{MONITOR_PORT}/healthz"

    def kill(self) -> None:
        """SIGKILL the node (a lost machine)."""
        self.process.kill(signal.SIGKILL)


@dataclass
class NatsCluster:
    """The started nodes, by server name."""

    nodes: dict[str, NatsNode]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (the form ``CCPIPE_NATS_URL`` accepts)."""
        return ",".join(node.url for node in self.nodes.values())


def node_config(name: str, machine: Machine, peers: list[Machine], store: Path) -> str:
    """The configuration of node ``name`` on ``machine``, routed to ``peers``."""
    routes = ", ".join(json.dumps(f"nats-route://{peer.address}:{ROUTE_PORT}") for peer in peers)
    return (
        f"server_name: {name}\n"
        f"listen: {machine.address}:{CLIENT_PORT}\n"
        f"http: {machine.address}:{MONITOR_PORT}\n"
        "max_payload: 8MB\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: {machine.address}:{ROUTE_PORT}\n  routes: [{routes}]\n}}\n"
    )


def start_nats_cluster(network: Network, machines: list[Machine], probe_from: Machine) -> NatsCluster:
    """One node per machine (named ``n1``, ``n2``, ...), waited for until each answers healthy from ``probe_from``."""
    binary = nats_server_binary()
    configs = network.root / "nats-config"
    configs.mkdir(exist_ok=True)
    nodes: dict[str, NatsNode] = {}
    for i, machine in enumerate(machines, start=1):
        name = f"n{i}"
        conf = configs / f"{name}.conf"
        store = network.data_dir_of(machine, "nats") / "jetstream"
        conf.write_text(node_config(name, machine, [m for m in machines if m is not machine], store))
        nodes[name] = NatsNode(name, machine, network.spawn(machine, "nats", [binary, "-c", str(conf)]))
    network.wait_http_ok(probe_from, [node.health_url for node in nodes.values()], timeout=START_TIMEOUT_S)
    return NatsCluster(nodes)
