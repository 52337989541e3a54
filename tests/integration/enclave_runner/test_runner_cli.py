"""``ccpipe runner`` as a user runs it: the node joins by attesting, appears in the inventory, and leaves on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.stages.attest.kbs.service import serve_kbs
from ccpipe.stages.deploy.inventory_kv import list_attestations, list_nodes

pytestmark = pytest.mark.integration


async def node_ids(js: JetStreamContext) -> set[str]:
    return {n.node_id for n in await list_nodes(js)}


async def test_runner_cli_announces_node_and_withdraws_on_interrupt(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    env = {**os.environ, "CCPIPE_DATA_DIR": str(tmp_path / "data"), "CCPIPE_NATS_URL": nats_server.url,
           "CCPIPE_KBS_URL": "http://127.0.0.1:9"}
    # the KBS process admits nodes (over NATS); it shares the data directory's emulated roots
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url, allow_emulated=True)
    async with serve_kbs(settings, Endpoints(nats_url=nats_server.url)):
        await _run_runner_cli(js, env)
    assert (await list_attestations(js, ["cli-node-7"]))["cli-node-7"].tee.value == "tdx"


async def _run_runner_cli(js: JetStreamContext, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccpipe", "runner", "--node-id", "cli-node-7", "--tee", "emulated-tdx"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for _ in range(150):
            if "cli-node-7" in await node_ids(js):
                break
            assert proc.poll() is None, proc.communicate()
            await asyncio.sleep(0.2)
        nodes = {n.node_id: n for n in await list_nodes(js)}
        assert nodes["cli-node-7"].tee.value == "tdx" and nodes["cli-node-7"].capacity.total == 2
        # the heartbeat is written before the agent has finished starting: interrupt it once it says it waits
        said = ""
        while "waits for scheduled workloads" not in said:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)  # type: ignore[union-attr]
            assert line, proc.communicate()
            said += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        out = said + out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "cli-node-7" in out and "waits for scheduled workloads" in out
    assert proc.returncode == 130, err
    assert "cli-node-7" not in await node_ids(js)


def test_runner_cli_refuses_bad_node_id(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ccpipe", "runner", "--node-id", "Not Valid"], capture_output=True,
        text=True, env={**os.environ, "CCPIPE_DATA_DIR": str(tmp_path)}, timeout=60,
    )
    assert result.returncode == 2
    assert "node id 'Not Valid' is not valid" in result.stderr
