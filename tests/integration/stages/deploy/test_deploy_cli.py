"""``ccpipe nodes`` and ``ccpipe k8s manifest`` as a user runs them, against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from nats.js import JetStreamContext

from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Submitted
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.deploy.k8s import INITDATA_ANNOTATION, decode_initdata
from tests.genuine_events import genuine_publisher
from tests.integration.stages.deploy.node_helpers import StartNode, unique

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "ef" * 32


async def ccpipe(nats: EmbeddedNats, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCPIPE_NATS_URL": nats.url}
    env.pop("CCPIPE_KBS_URL", None)
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ccpipe", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=Path(__file__).resolve().parents[4],
    )


async def test_nodes_lists_heartbeating_nodes(nats_server: EmbeddedNats, start_node: StartNode) -> None:
    snp, tdx = unique("cli-snp"), unique("cli-tdx")
    await start_node(snp, "snp", "--total", "4", "--free", "3", "--tcb", "snp=22")
    await start_node(tdx, "tdx", "--emulated")
    out = await ccpipe(nats_server, "nodes", "--json")
    assert out.returncode == 0, out.stderr
    listed = {n["node_id"]: n for n in json.loads(out.stdout)}
    assert listed[snp]["tee"] == "snp" and listed[snp]["capacity"] == {"total": 4, "free": 3}
    assert listed[snp]["tcb"] == {"snp": 22} and listed[tdx]["emulated"] is True
    table = await ccpipe(nats_server, "nodes")
    row = next(line for line in table.stdout.splitlines() if line.startswith(tdx))
    assert "tdx*" in row and "emulated" in row


async def test_k8s_manifest_for_a_scheduled_workload(
    nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str
) -> None:
    spec = WorkloadSpec.model_validate({"workload": {"name": "hello"}, "tee": {"types": ["snp"]}})
    pub = genuine_publisher(js)
    for etype, payload in (
        (EventType.SUBMITTED, Submitted(repo="/r", ref="refs/heads/main", old_commit="0" * 40,
                                        new_commit="1" * 40, pusher="t", spec=spec)),
        (EventType.PUSHED, Pushed(registry="127.0.0.1:5000", repository="ccpipe/hello", image_digest=DIGEST,
                                  reference=f"docker://127.0.0.1:5000/ccpipe/hello@{DIGEST}")),
        (EventType.SCHEDULED, Scheduled(node_id="n1", tee=TeeType.SNP, backend="sev-guest")),
    ):
        await pub.publish(Event(type=etype, workload_id=workload_id, source=Source(component="t"), payload=payload))
    out = await ccpipe(nats_server, "k8s", "manifest", workload_id, "--kbs-url", "https://kbs.example",
                       "--kind", "Deployment", "--replicas", "3", "--registry", "registry.example")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    kubernetes_validate.validate(doc, "1.37.0", strict=True)
    pod = doc["spec"]["template"]
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-snp"
    assert pod["spec"]["nodeSelector"] == {"amd.feature.node.kubernetes.io/snp": "true"}
    assert pod["spec"]["containers"][0]["image"] == f"registry.example/ccpipe/hello@{DIGEST}"
    assert "https://kbs.example" in decode_initdata(pod["metadata"]["annotations"][INITDATA_ANNOTATION])


async def test_k8s_manifest_errors_are_one_sentence(nats_server: EmbeddedNats, js: JetStreamContext) -> None:
    out = await ccpipe(nats_server, "k8s", "manifest", "no-such-workload", "--kbs-url", "http://kbs")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().startswith("ccpipe k8s: workload no-such-workload has no submitted event")
    assert len(out.stderr.strip().splitlines()) == 1
    no_kbs = await ccpipe(nats_server, "k8s", "manifest", "no-such-workload")
    assert no_kbs.returncode == 3 and "--kbs-url" in no_kbs.stderr
