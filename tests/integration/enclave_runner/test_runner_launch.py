"""The launch flow against the real KBS, a real nats-server and a real docker-registry.

The happy path shows the trail the issue asks for (attestation.verified → key.released →
workload.running → workload.exited); each negative path ends in exactly one ``failed`` event
and stops before the step it must not reach.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import JetStreamContext

from ccpipe.enclave_runner import launch as launch_module
from ccpipe.enclave_runner.launch import Launcher, RunClaim
from ccpipe.enclave_runner.node import RunnerNode
from ccpipe.enclave_runner.run_claims import KvRunClaims
from ccpipe.enclave_runner.sandbox import cgroups
from ccpipe.enclave_runner.workspace import shm_root
from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.cli.events import describe
from ccpipe.pipeline.event_trust import input_trust
from ccpipe.pipeline.reader import workload_event
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.events import EnclaveLaunched, EventType, Failed, LimitKind, WorkloadExited, WorkloadRunning
from ccpipe.stages.attest.kbs.service import serve_kbs
from tests.integration.enclave_runner.runner_launch_helpers import busybox_layer, prepare_workload, trail, types

pytestmark = pytest.mark.integration
NODE = "it-node-1"


@pytest.fixture
async def env(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, tmp_path: Path, js: JetStreamContext
) -> AsyncIterator[tuple[Settings, Endpoints]]:
    """Settings on a private data dir, and the endpoints with a running embedded KBS."""
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url, registry=registry_server.address,
                        allow_emulated=True)
    eps = Endpoints(nats_url=nats_server.url, registry=registry_server.address)
    async with serve_kbs(settings, eps) as running:
        yield settings, running


def launcher(js: JetStreamContext, settings: Settings, eps: Endpoints, node: RunnerNode,
             claim: RunClaim | None = None) -> Launcher:
    publisher = EventPublisher(js, signer=event_signer(settings.data_dir))

    async def publish(event: Event, msg_id: str) -> None:
        await publisher.publish(event, msg_id)

    async def lookup(workload_id: str, etype: EventType) -> Event:
        return await workload_event(js, workload_id, etype, trust=input_trust(settings.data_dir))

    assert eps.kbs_url
    return Launcher(settings, node, kbs_url=eps.kbs_url, publish=publish, lookup=lookup, claim=claim)


@pytest.mark.parametrize("tee", ["emulated-snp", "emulated-tdx"])
async def test_runner_launch_runs_workload_and_trail_shows_each_step(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str, tee: str
) -> None:
    settings, eps = env
    script = 'echo "$GREETING from $(busybox pwd)"; busybox ls /; exit 3\n'
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer(script)], node_id=NODE)
    report = await launcher(js, settings, eps, RunnerNode(NODE, tee=tee)).launch(wl.scheduled)
    assert report.failure is None, report.failure
    assert report.result is not None and report.result.exit_code == 3
    assert report.result.log.startswith(b"hello from /app\n")
    if os.geteuid() == 0:  # a root runner never runs the workload as host root
        assert report.sandbox_uid is not None and report.sandbox_uid >= 200_000
    assert report.workspace_kind == "tmpfs"
    events = await trail(js, workload_id)
    order = types(events)
    for before, after in [("enclave.launched", "attestation.verified"), ("attestation.verified", "key.released"),
                          ("key.released", "workload.running"), ("workload.running", "workload.exited")]:
        assert order.index(before) < order.index(after), order
    assert "failed" not in order
    launched = events[order.index("enclave.launched")].payload
    assert isinstance(launched, EnclaveLaunched)
    assert launched.tee.value == tee.removeprefix("emulated-") and launched.node_id == NODE
    assert launched.launch_measurement and len(launched.launch_measurement) == 96
    verified = events[order.index("attestation.verified")].payload
    assert getattr(verified, "tee", None) == launched.tee
    running = events[order.index("workload.running")].payload
    assert isinstance(running, WorkloadRunning) and running.limits is not None
    assert running.limits.memory in (LimitKind.CGROUP_V2, LimitKind.CGROUP_V1)  # required by default
    assert running.limits == report.result.limits
    exited = events[order.index("workload.exited")].payload
    assert isinstance(exited, WorkloadExited)
    assert exited.exit_code == 3 and exited.node_id == NODE
    assert exited.output_digest == "sha256:" + hashlib.sha256(report.result.log).hexdigest()
    assert set(exited.timings_s or {}) >= {"attest", "key", "pull", "verify", "decrypt", "unpack", "start", "run"}
    released = [e for e in events if e.type == EventType.KEY_RELEASED]
    assert {getattr(e.payload, "resource", "") for e in released} >= {f"ccpipe/{workload_id}/image-key"}
    kept = settings.data_dir / "runner" / "logs" / workload_id / (exited.output_digest.replace(":", "-") + ".log")
    assert kept.read_bytes() == report.result.log
    assert not any((settings.data_dir / "runner" / "work").glob("*")), "workspace not removed"


async def test_runner_launch_kbs_refuses_changed_measurement_no_decryption(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str
) -> None:
    settings, eps = env
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer("echo never\n")],
                                node_id=NODE)
    node = RunnerNode(NODE, measurement=bytes.fromhex("ab" * 48))  # not the registered launch measurement
    report = await launcher(js, settings, eps, node).launch(wl.scheduled)
    assert report.failure is not None and report.failure.code == "runner.kbs.refused", report.failure
    assert report.failure.stage == "runner"
    assert "decrypt" not in report.timings and "pull" not in report.timings and report.result is None
    order = types(await trail(js, workload_id))
    assert order.count("failed") == 1
    assert "attestation.rejected" in order or "key.denied" in order
    assert not [t for t in order if t in ("workload.running", "workload.exited")]
    released = [e for e in await trail(js, workload_id)
                if e.type == EventType.KEY_RELEASED and getattr(e.payload, "resource", "").endswith("image-key")]
    assert released == []


async def test_runner_launch_untrusted_signature_refused_before_decryption(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str
) -> None:
    settings, eps = env
    attacker = ec.generate_private_key(ec.SECP256R1())
    trusted = ec.generate_private_key(ec.SECP256R1())
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer("echo never\n")],
                                node_id=NODE, signing_key=attacker, trusted_key=trusted)
    report = await launcher(js, settings, eps, RunnerNode(NODE)).launch(wl.scheduled)
    assert report.failure is not None and report.failure.code == "runner.verify.untrusted", report.failure
    assert "verify" in report.timings and "decrypt" not in report.timings
    order = types(await trail(js, workload_id))
    assert order.count("failed") == 1 and "workload.running" not in order


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("file", "../../etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)], "contains '..'"),
        ([("sym", "escape", b"../../../../../../../../etc", 0o777), ("file", "escape/passwd", b"x", 0o644)],
         "points outside the root"),
        ([("chr", "dev/evil", b"", 0o666)], "character device"),
    ],
    ids=["dotdot", "escaping-symlink", "device-node"],
)
async def test_runner_launch_hostile_layer_refused(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str,
    entries: list[tuple[str, str, bytes, int]], why: str,
) -> None:
    settings, eps = env
    host_passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer("echo never\n", entries)],
                                node_id=NODE)
    # the workspace is <base>/<launch>/rootfs: "../../etc/passwd" from the root would be <base>/etc/passwd
    bases = [shm_root(settings.data_dir), settings.data_dir / "runner" / "work"]
    report = await launcher(js, settings, eps, RunnerNode(NODE)).launch(wl.scheduled)
    assert report.failure is not None and report.failure.code == "runner.unpack.unsafe", report.failure
    assert why in report.failure.message and entries[0][1] in report.failure.message
    assert "start" not in report.timings and report.result is None
    # nothing outside the root: the host file, and the workspace parents (where ../../ would land)
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == host_passwd
    assert not any((base / "etc").exists() or (base / "escape").exists() for base in bases)
    order = types(await trail(js, workload_id))
    assert order.count("failed") == 1 and "workload.running" not in order


@pytest.mark.parametrize("mode", ["required", "best-effort"])
async def test_runner_launch_without_limits_refused_unless_best_effort(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str, mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node that can bound nothing (no cgroup mounted, sandbox as host root) fails the workload by default."""
    assert os.geteuid() == 0, "this test needs a root runner (CI runs as root)"
    settings, eps = env
    no_mounts = tmp_path / "mountinfo"
    no_mounts.write_text("")
    monkeypatch.setattr(cgroups, "PROC_SELF_MOUNTINFO", no_mounts)
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer("echo ran\n")],
                                node_id=NODE)
    node = RunnerNode(NODE, unprivileged_sandbox=False)
    report = await launcher(js, settings.model_copy(update={"sandbox_limits": mode}), eps, node).launch(wl.scheduled)
    events = await trail(js, workload_id)
    order = types(events)
    if mode == "required":
        assert report.failure is not None and report.failure.code == "runner.sandbox.limits", report.failure
        assert "pids limit" in report.failure.message and "CCPIPE_SANDBOX_LIMITS=best-effort" in report.failure.hint
        assert order.count("failed") == 1 and "workload.running" not in order
        assert "key.released" not in order and "pull" not in report.timings  # refused before any key is released
        failed = events[order.index("failed")].payload
        assert isinstance(failed, Failed) and failed.reason == report.failure
    else:
        assert report.failure is None and report.result is not None and report.result.log == b"ran\n"
        running = events[order.index("workload.running")].payload
        assert isinstance(running, WorkloadRunning) and running.limits is not None
        assert (running.limits.pids, running.limits.memory) == (LimitKind.NONE, LimitKind.RLIMIT)
        assert describe(events[order.index("workload.running")]) == "limits: pids none, memory rlimit"  # ccpipe events


async def test_a_workload_placed_again_while_its_first_node_launches_starts_once(
    js: JetStreamContext, env: tuple[Settings, Endpoints], tmp_path: Path, workload_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the scheduler moved it (the first node missed heartbeats on a loaded machine) while the
    # first node was still launching: the first to reach the start claims it, the other stops
    settings, eps = env
    wl = await prepare_workload(js, settings, eps, workload_id, tmp_path, [busybox_layer("echo once\n")],
                                node_id=NODE)
    claims = KvRunClaims(js)
    assert await claims.claim(workload_id, "placement-on-another-node", 60.0)
    monkeypatch.setattr(launch_module, "CLAIM_TAKE_OVER_S", 0.5)  # the holder neither starts it nor goes stale

    async def held_elsewhere(workload: str, placement: str, take_over_after_s: float) -> bool:
        return await claims.claim(workload, placement, 60.0)

    late = await launcher(js, settings, eps, RunnerNode(NODE), held_elsewhere).launch(wl.scheduled)
    assert late.superseded and late.failure is None and late.result is None
    order = types(await trail(js, workload_id))
    assert "workload.running" not in order and "workload.exited" not in order and "failed" not in order
    assert "image.unpacked" in order  # it stopped at the start, keys and image already checked
    assert not any((settings.data_dir / "runner" / "work").glob("*")), "workspace not removed"


async def test_a_run_claim_left_by_a_node_that_died_before_the_start_is_taken_over(
    js: JetStreamContext, workload_id: str
) -> None:
    claims = KvRunClaims(js)
    assert await claims.claim(workload_id, "first", 60.0)
    assert await claims.claim(workload_id, "first", 60.0)  # the holder may ask again
    assert not await claims.claim(workload_id, "second", 60.0)  # fresh: the first may still start it
    assert await claims.claim(workload_id, "second", 0.0)  # stale: the first died before its start
    assert not await claims.claim(workload_id, "first", 60.0)
