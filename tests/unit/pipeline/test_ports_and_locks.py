"""Stable ports remembered in the data directory, and lock files that name their holder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ccpipe.pipeline.locks import take_lock
from ccpipe.pipeline.ports import http_url, ports_file, stable_port
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import ConfigurationError


def test_a_port_is_chosen_once_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    kbs = stable_port(settings, "kbs")
    audit = stable_port(settings, "audit_api")
    assert kbs != audit
    assert stable_port(settings, "kbs") == kbs and stable_port(settings, "audit_api") == audit
    assert json.loads(ports_file(tmp_path).read_text()) == {"kbs": kbs, "audit_api": audit}


def test_the_setting_picks_the_port_and_is_remembered(tmp_path: Path) -> None:
    first = stable_port(Settings(data_dir=tmp_path), "registry")
    with socket.socket() as s:  # some other free port
        s.bind(("127.0.0.1", 0))
        chosen = s.getsockname()[1]
    assert chosen != first
    assert stable_port(Settings(data_dir=tmp_path, registry_port=chosen), "registry") == chosen
    assert stable_port(Settings(data_dir=tmp_path), "registry") == chosen


@pytest.mark.parametrize("configured", [False, True])
def test_a_taken_port_is_refused_naming_it_and_the_setting(tmp_path: Path, configured: bool) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        if configured:
            settings = Settings(data_dir=tmp_path, nats_port=port)
        else:
            settings = Settings(data_dir=tmp_path)
            ports_file(tmp_path).write_text(json.dumps({"nats": port}))
        with pytest.raises(ConfigurationError) as refused:
            stable_port(settings, "nats", release_wait_s=0.2)
    assert f"port {port} of the embedded NATS server" in refused.value.message
    assert ("(CCPIPE_NATS_PORT)" if configured else "remembered in") in refused.value.message
    assert "CCPIPE_NATS_PORT" in refused.value.hint and refused.value.code == "services.port.taken"


def test_a_damaged_ports_file_is_a_damaged_data_directory(tmp_path: Path) -> None:
    ports_file(tmp_path).write_text("{not json")
    with pytest.raises(ConfigurationError) as damaged:
        stable_port(Settings(data_dir=tmp_path), "kbs")
    assert damaged.value.code == "services.ports.corrupt" and "ports.json is damaged" in damaged.value.message


def test_a_held_lock_is_refused_naming_its_holder_and_released_after(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    held = take_lock(path, "x is busy", hint="h", code="c")
    held.share_with("helper", 4242)
    with pytest.raises(ConfigurationError) as refused:
        take_lock(path, "x is busy", hint="h", code="c", wait_for_dying_s=5.0)  # the holder lives: no wait
    assert refused.value.message.startswith(f"x is busy (pid {os.getpid()} since ")
    assert refused.value.message.endswith(", helper pid 4242)")
    held.release()
    take_lock(path, "x is busy", hint="h", code="c").release()


def test_a_lock_handed_to_a_child_outlives_its_dead_holder_until_the_child_ends(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    held = take_lock(path, "the store is busy", hint="h", code="c")
    child = subprocess.Popen(["sleep", "1"], pass_fds=(held.fd,))
    try:
        # as after a SIGKILL: the recorded holder is gone, its child still holds the lock
        dead = subprocess.Popen(["true"])
        dead.wait()
        path.write_text(json.dumps({"pid": dead.pid, "since": "then"}))
        held.release()
        with pytest.raises(ConfigurationError, match=rf"\(pid {dead.pid} since then\)"):
            take_lock(path, "the store is busy", hint="h", code="c")
        start = time.monotonic()
        take_lock(path, "the store is busy", hint="h", code="c", wait_for_dying_s=10.0).release()
        assert child.poll() is not None and time.monotonic() - start < 5.0
    finally:
        child.kill()
        child.wait()


def test_http_url_names_this_host_for_a_wildcard_listener_and_brackets_ipv6() -> None:
    assert http_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert http_url("0.0.0.0", 8080) == f"http://{socket.gethostname()}:8080"
    assert http_url("::", 8080) == f"http://{socket.gethostname()}:8080"
    assert http_url("::1", 8080) == "http://[::1]:8080"
