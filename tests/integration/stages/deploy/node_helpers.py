"""Start and stop runner-like node processes (``node_process.py``) for the scheduling tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from ccpipe.stages.deploy.inventory import NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import list_nodes

SCRIPT = Path(__file__).with_name("node_process.py")
ROOT = Path(__file__).resolve().parents[4]

StartNode = Callable[..., Coroutine[Any, Any, subprocess.Popen[str]]]


def unique(prefix: str) -> str:
    """A node id no other test uses (they share one server)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def spawn_node(url: str, node_id: str, tee: str, *flags: str) -> subprocess.Popen[str]:
    """Start one node process (not yet announced: wait for its ``ready`` line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, node_id, tee, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


async def wait_ready(proc: subprocess.Popen[str], node_id: str) -> None:
    """Wait for the process's ``ready`` line; fails with its stderr otherwise."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=20)
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"node {node_id} did not start: {proc.stderr.read() if proc.stderr else ''}")


async def wait_nodes(js: JetStreamContext, pred: Callable[[list[NodeAnnouncement]], bool],
                     timeout: float = 15.0) -> list[NodeAnnouncement]:
    """Poll the inventory until ``pred`` holds; returns the last listing."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        nodes = await list_nodes(js)
        if pred(nodes) or asyncio.get_running_loop().time() > deadline:
            return nodes
        await asyncio.sleep(0.1)
