"""The stand-in machines themselves: processes and namespaces go at close, a dead run's leftovers at the next start."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.multihost.netns import (
    OWNERS,
    PREFIX,
    Network,
    ip,
    ip_binary,
    namespaces,
    process_start_time,
    remove_namespace,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def fake_run(owner_pid: int, start: str | None) -> tuple[str, Path]:
    """A namespace and owner record as a run owned by ``owner_pid`` would have left them."""
    run = secrets.token_hex(3)
    netns = f"{PREFIX}{run}-left"
    OWNERS.mkdir(parents=True, exist_ok=True)
    record = OWNERS / f"{run}.json"
    record.write_text(json.dumps({"pid": owner_pid, "start": start}))
    ip("netns", "add", netns)
    return netns, record


def test_close_kills_every_process_of_a_group_and_deletes_the_namespaces(network: Network) -> None:
    a, b = network.add_machine("a"), network.add_machine("b")
    probe = network.run(a, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], timeout=10)
    assert a.address in probe.stdout
    # a child in the background stays in the process group: killing the group must take it too
    proc = network.spawn(b, "sleepers", ["sh", "-c", "sleep 300 & exec sleep 300"])
    assert proc.data_dir == network.root / "b" / "sleepers" and proc.data_dir.is_dir()
    with pytest.raises(FileExistsError):
        network.spawn(b, "sleepers", ["true"])  # no second process in the same data directory
    network.close()
    assert network.remnants() == []
    assert not any(n.startswith(network.namespace_name("")) for n in namespaces())
    network.close()  # idempotent: the fixture's finaliser calls it again


def test_the_leftovers_of_a_dead_run_are_removed_at_the_next_start_and_a_live_run_is_kept(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait(timeout=10)
    # its pid, with a start time no live process has, is the owner of a crashed run
    dead_ns, dead_record = fake_run(ended.pid, "0")
    sleeper = subprocess.Popen([ip_binary(), "netns", "exec", dead_ns, "sleep", "300"], start_new_session=True)
    live_ns, live_record = fake_run(os.getpid(), process_start_time(os.getpid()))
    try:
        with Network(tmp_path / "hosts"):
            assert dead_ns not in namespaces() and not dead_record.exists()
            assert sleeper.wait(timeout=10) != 0  # killed with its namespace
            assert live_ns in namespaces() and live_record.exists()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
        for ns in (dead_ns, live_ns):
            if ns in namespaces():
                remove_namespace(ns)
        live_record.unlink(missing_ok=True)
        dead_record.unlink(missing_ok=True)
