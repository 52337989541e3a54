"""Three nats-server nodes on three stand-in machines form one JetStream cluster that survives losing one.

A client on a fourth machine creates ccpipe's events stream with three replicas, publishes, and
goes on publishing and consuming through the two remaining nodes after the stream leader's
node (the one the client is connected to) is SIGKILLed. Closing the network leaves no
namespace, link or process behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.multihost.conftest import REPO_ROOT
from tests.multihost.nats_cluster import start_nats_cluster
from tests.multihost.netns import Network, ip, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
BEFORE, AFTER = 50, 50
"""Messages published before and after the node is lost."""


def root_links() -> set[str]:
    """Names of the links in the root namespace (the network must add none and leave none)."""
    return {line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").splitlines()}


def read_json(path: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads(path.read_text())
    return value


def test_a_three_machine_jetstream_cluster_keeps_publishing_and_consuming_through_a_lost_node(
        network: Network) -> None:
    links_before = root_links()
    machines = [network.add_machine(f"nats{i}") for i in (1, 2, 3)]
    client_machine = network.add_machine("client")
    cluster = start_nats_cluster(network, machines, probe_from=client_machine)

    nodes = ",".join(f"{name}={node.url}" for name, node in cluster.nodes.items())
    out = network.data_dir_of(client_machine, "client")
    client = network.spawn(client_machine, "client", [
        sys.executable, "-m", "tests.multihost.cluster_client", "--nodes", nodes,
        "--before", str(BEFORE), "--after", str(AFTER), "--out", str(out)], env={"PYTHONPATH": str(REPO_ROOT)})
    ready = out / "ready.json"

    def client_ready() -> bool:
        assert client.alive() or ready.exists(), f"the client exited early:\n{client.log()[-3000:]}"
        return ready.exists()

    wait_until(client_ready, 30, "the client's first batch")
    first = read_json(ready)
    leader = str(first["leader"])
    assert first["connected"] == leader, first

    victim = cluster.nodes[leader]
    victim.kill()
    assert not victim.process.alive()
    (out / "go").touch()
    try:
        client.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client did not finish within 60 s:\n{client.log()[-3000:]}")
    assert client.popen.returncode == 0, client.log()[-3000:]

    result = read_json(out / "result.json")
    received = result["received"]
    assert isinstance(received, list)
    assert sorted(received) == list(range(BEFORE + AFTER)), f"lost or duplicated messages: {result}"
    assert result["stream_messages"] == BEFORE + AFTER
    assert result["leader_after"] not in (None, leader), result
    assert result["connected_after"] != leader, result
    for name, node in cluster.nodes.items():
        assert node.process.alive() == (name != leader), f"{name}:\n{node.process.log()[-2000:]}"

    network.close()
    assert network.remnants() == []
    assert root_links() == links_before
