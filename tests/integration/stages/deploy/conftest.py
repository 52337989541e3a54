"""Fixtures of the deploy stage's integration tests (NATS and the registry servers come from tests/integration)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from ccpipe.pipeline.servers import EmbeddedNats
from tests.attested_nodes import attestation, record_attestation
from tests.integration.stages.deploy.node_helpers import StartNode, spawn_node, wait_ready


def _tcb(flags: tuple[str, ...]) -> dict[str, int]:
    value = flags[flags.index("--tcb") + 1] if "--tcb" in flags else ""
    return {k: int(v) for k, v in (item.split("=") for item in value.split(",") if item)}


@pytest.fixture
def start_node(nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path) -> Iterator[StartNode]:
    """``await start_node(node_id, tee, *flags)``: a runner-like node process, announced once this
    returns (see node_process.py); killed at teardown.

    The node is admitted as the attestation service would admit it: its verified TEE is what its
    flags say (``tee``, ``--emulated``, ``--tcb``) and it signs heartbeats with the key recorded.
    """
    procs: list[subprocess.Popen[str]] = []

    async def start(node_id: str, tee: str, *flags: str) -> subprocess.Popen[str]:
        key = Ed25519PrivateKey.generate()
        key_file = tmp_path / f"{node_id}.key"
        key_file.write_bytes(key.private_bytes_raw())
        await record_attestation(js, attestation(node_id, key, tee, emulated="--emulated" in flags, tcb=_tcb(flags)))
        proc = spawn_node(nats_server.url, node_id, tee, str(key_file), *flags)
        procs.append(proc)
        await wait_ready(proc, node_id)
        return proc

    yield start
    for proc in procs:  # a clean stop withdraws the node, so the next test does not see it
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
