"""Parts of the launch flow without servers: KBS step mapping, enclave start, workspace, inputs."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from ccpipe.enclave_runner import kbs as runner_kbs
from ccpipe.enclave_runner.errors import KbsRefused, KbsUnavailable, LaunchError, LaunchInputMissing
from ccpipe.enclave_runner.image import read_image, run_config
from ccpipe.enclave_runner.kbs import fetch_launch_secrets
from ccpipe.enclave_runner.launch import Launcher, LaunchInputs, gather_inputs, launch_initdata
from ccpipe.enclave_runner.node import RunnerNode, join_backend, start_enclave
from ccpipe.enclave_runner.workspace import create_workspace
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.evidence.measurement import launch_measurement_for
from ccpipe.evidence.snp_evidence import snp_report_from_json
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source, derived_msg_id
from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput, TransientError
from ccpipe.schemas.events import EventType, Failed, Pushed, Scheduled, Signed
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.sign.release import workload_initdata

DIGEST = "sha256:" + "ab" * 32
KBS = "http://127.0.0.1:9"


class FakeSession:
    """An RCAR session double: records calls, answers from a table, fails as told."""

    def __init__(self, answers: dict[str, bytes], fail: Sequence[BaseException] = ()) -> None:
        self.answers, self.fail = answers, list(fail)
        self.calls: list[str] = []

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def attest(self) -> str:
        self.calls.append("attest")
        if self.fail:
            raise self.fail.pop(0)
        return "token"

    async def get_resource(self, resource_path: str) -> bytes:
        self.calls.append(resource_path)
        return self.answers[resource_path]


def factory(session: FakeSession) -> Any:
    def make(kbs_url: str, backend: EvidenceBackend, **kw: Any) -> FakeSession:
        assert kw["init_data"] == b"initdata" and kw["workload_id"] == "wl-1"
        return session
    return make


GOOD = {"ccpipe/wl-1/image-key": b"k" * 32, "ccpipe/wl-1/cosign-pubkey": b"PEM"}


async def test_runner_kbs_one_attestation_two_resources() -> None:
    session = FakeSession(GOOD)
    timings: dict[str, float] = {}
    secrets = await fetch_launch_secrets(KBS, object(), "initdata", "wl-1", TeeType.SNP, node_id="n",  # type: ignore[arg-type]
                                         factory=factory(session), timings=timings)
    assert session.calls == ["attest", "ccpipe/wl-1/image-key", "ccpipe/wl-1/cosign-pubkey"]
    assert set(timings) == {"attest", "key"}
    assert secrets.cosign_pubkey == b"PEM"
    assert secrets.take_image_key() == b"k" * 32
    with pytest.raises(LaunchError, match="already used"):
        secrets.take_image_key()


async def test_runner_kbs_refusal_is_final_and_named() -> None:
    refused = CcpipeError("KBS refused POST attest (401 AttestationError): measurement", code="kbs.client.refused")
    session = FakeSession(GOOD, [refused])
    with pytest.raises(KbsRefused, match="refused attesting this enclave.*measurement"):
        await fetch_launch_secrets(KBS, object(), "initdata", "wl-1", TeeType.SNP, node_id="n",  # type: ignore[arg-type]
                                   factory=factory(session))
    assert session.calls == ["attest"]  # not retried, no resource asked


async def test_runner_kbs_unavailable_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # a KBS that does not answer is waited for as long as a restart of 'ccpipe up' takes, then reported
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the module reads time.monotonic()
    down = [TransientError("connection refused", code="kbs.client.unavailable") for _ in range(1000)]
    with pytest.raises(KbsUnavailable, match="did not answer"):
        await fetch_launch_secrets(KBS, object(), "initdata", "wl-1", TeeType.SNP, node_id="n",  # type: ignore[arg-type]
                                   factory=factory(FakeSession(GOOD, down)))
    assert runner_kbs.PATIENCE_S - runner_kbs.MAX_PAUSE_S <= clock[0] <= runner_kbs.PATIENCE_S
    once = FakeSession(GOOD, down[:1])
    await fetch_launch_secrets(KBS, object(), "initdata", "wl-1", TeeType.SNP, node_id="n",  # type: ignore[arg-type]
                               factory=factory(once))
    assert once.calls.count("attest") == 2


async def test_runner_kbs_image_key_must_be_32_bytes() -> None:
    bad = {**GOOD, "ccpipe/wl-1/image-key": b"short"}
    with pytest.raises(LaunchError, match="5 bytes, not a 32-byte image key"):
        await fetch_launch_secrets(KBS, object(), "initdata", "wl-1", TeeType.SNP, node_id="n",  # type: ignore[arg-type]
                                   factory=factory(FakeSession(bad)))


def _inputs(kbs_url: str = KBS, initdata_hex: str | None = None) -> LaunchInputs:
    pushed = Pushed(registry="127.0.0.1:5000", repository="ccpipe/hello", image_digest=DIGEST,
                    reference=f"docker://127.0.0.1:5000/ccpipe/hello@{DIGEST}")
    _, good_hex = workload_initdata(kbs_url, DIGEST, "127.0.0.1:5000/ccpipe/hello", "kbs:///ccpipe/wl-1/cosign-pubkey")
    signed = Signed(image_digest=DIGEST, source_image_digest=DIGEST, layout="/x", key_resource="kbs:///ccpipe/wl-1/image-key",
                    signature_digest=DIGEST, initdata_digest=initdata_hex or good_hex)
    scheduled = Event(type=EventType.SCHEDULED, workload_id="wl-1", source=Source(component="scheduler"),
                      payload=Scheduled(node_id="n1", tee=TeeType.SNP, backend="emulated"))
    return LaunchInputs(scheduled, pushed, signed, None)


def test_runner_initdata_matches_sign_stage_or_is_refused() -> None:
    text = launch_initdata(KBS, _inputs())
    assert "127.0.0.1:5000/ccpipe/hello@" + DIGEST in text
    with pytest.raises(LaunchError, match="initdata this node builds") as exc:
        launch_initdata("http://other-kbs:8080", _inputs())
    assert exc.value.code == "runner.initdata.mismatch"


def test_runner_enclave_binds_initdata_and_measurement(tmp_path: Path) -> None:
    initdata = launch_initdata(KBS, _inputs())
    enclave = start_enclave(tmp_path, RunnerNode("n1"), initdata)
    assert enclave.tee == TeeType.SNP and enclave.emulated
    assert enclave.measurement_hex == launch_measurement_for(b"").hex()
    report = snp_report_from_json(enclave.backend.get_evidence(b"rd").evidence_json()["attestation_report"])
    assert report.host_data == initdata_digest(initdata)
    assert report.measurement.hex() == enclave.measurement_hex
    changed = start_enclave(tmp_path, RunnerNode("n1", measurement=b"\x01" * 48), initdata)
    assert changed.measurement_hex == "01" * 48
    tdx = start_enclave(tmp_path, RunnerNode("n1", tee="emulated-tdx"), initdata)
    assert tdx.tee == TeeType.TDX
    assert join_backend(tmp_path, RunnerNode("n", tee="emulated-tdx")).describe().tee == TeeType.TDX
    with pytest.raises(ConfigurationError, match="unknown runner TEE"):
        start_enclave(tmp_path, RunnerNode("n1", tee="sgx-magic"), initdata)


def test_runner_workspace_tmpfs_or_private_disk(tmp_path: Path) -> None:
    fake_shm = tmp_path / "shm"
    fake_shm.mkdir()
    disk = create_workspace(tmp_path / "data", "launch-1", shm=fake_shm)  # not a tmpfs: the data dir
    assert disk.kind == "disk" and disk.path.parent == tmp_path / "data" / "runner" / "work"
    assert stat.S_IMODE(disk.path.stat().st_mode) == 0o700
    (disk.rootfs / "ro").mkdir(parents=True)
    (disk.rootfs / "ro" / "f").write_text("x")
    os.chmod(disk.rootfs / "ro", 0o500)
    disk.remove()
    assert not disk.path.exists()
    if Path("/dev/shm").is_dir():
        ram = create_workspace(tmp_path / "data", "launch-2")
        try:
            assert ram.kind == "tmpfs" and str(ram.path).startswith("/dev/shm/")
            assert stat.S_IMODE(ram.path.parent.stat().st_mode) == 0o700
        finally:
            ram.remove()
        too_big = create_workspace(tmp_path / "data", "launch-3", needed_bytes=1 << 60)
        assert too_big.kind == "disk"
        too_big.remove()
        shared = create_workspace(tmp_path / "data", "launch-4-" + os.urandom(8).hex(), traversable=True)
        try:  # searchable, not listable, by the sandbox's uid
            assert stat.S_IMODE(shared.path.stat().st_mode) == 0o711 and shared.others_can_traverse()
        finally:
            shared.remove()


async def test_runner_missing_inputs_make_one_failed_event(tmp_path: Path) -> None:
    published: list[tuple[Event, str]] = []

    async def publish(event: Event, msg_id: str) -> None:
        published.append((event, msg_id))

    async def lookup(workload_id: str, etype: EventType) -> Event:
        raise InvalidInput(f"workload {workload_id} has no {etype.value} event", code="event.missing")

    scheduled = _inputs().scheduled
    launcher = Launcher(Settings(data_dir=tmp_path), RunnerNode("n1"), kbs_url=KBS, publish=publish, lookup=lookup)
    report = await launcher.launch(scheduled)
    assert report.failure is not None and report.failure.code == "runner.input.missing"
    assert len(published) == 1
    event, msg_id = published[0]
    assert event.type == EventType.FAILED and isinstance(event.payload, Failed)
    assert event.payload.input_event_id == scheduled.id and event.source.component == "runner"
    assert msg_id == derived_msg_id("wl-1", EventType.FAILED, scheduled.id)


async def test_runner_pushed_and_signed_must_agree() -> None:
    inputs = _inputs()
    other = inputs.signed.model_copy(update={"image_digest": "sha256:" + "cd" * 32})

    async def lookup(workload_id: str, etype: EventType) -> Event:
        payload = {EventType.PUSHED: inputs.pushed, EventType.SIGNED: other}.get(etype)
        if payload is None:
            raise InvalidInput("none", code="event.missing")
        return Event(type=etype, workload_id=workload_id, source=Source(component="t"), payload=payload)

    with pytest.raises(LaunchInputMissing, match="is not the signed image"):
        await gather_inputs(inputs.scheduled, lookup)


def test_runner_image_config_types_checked() -> None:
    config = run_config({"config": {"Entrypoint": ["/a"], "Cmd": ["b"], "Env": ["A=1"], "User": "1:2"}})
    assert config.argv == ["/a", "b"] and config.workdir == "/"
    from ccpipe.enclave_runner.errors import ImageInvalid

    with pytest.raises(ImageInvalid, match="Cmd is not a list of strings"):
        run_config({"config": {"Cmd": "echo hi"}})
    with pytest.raises(ImageInvalid, match="cannot be read"):
        read_image(Path("/nonexistent-layout"), DIGEST)
