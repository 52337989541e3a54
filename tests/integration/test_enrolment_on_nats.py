"""Trust without a shared disk, against a real nats-server with authentication on (issue 16, item 3).

The administrator's machine and a component's host have data directories of their own; the only
thing they share is NATS. Attacks that must fail: a component credential writing the enrolment
bucket, a record signed by anyone but the admin, a key a component planted in its own keyring
file, a revoked key signing on, and ``ccpipe serve`` with a key nobody enrolled.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.errors import Error as NatsError

from ccpipe.pipeline.app import provision_as_admin
from ccpipe.pipeline.audit.service import running_audit_log
from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.enrolment import encode_public, new_record, sign_record
from ccpipe.pipeline.enrolment_bus import (
    check_own_enrolment,
    enrol,
    mirrored_enrolments,
    publish_record,
    read_records,
    revoke,
)
from ccpipe.pipeline.event_signature import ComponentKey, load_or_create_component_key, signature_header
from ccpipe.pipeline.event_trust import SignatureVerdict, UntrustedEvent, input_trust
from ccpipe.pipeline.nats_auth import ADMIN, ENROLMENTS
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import register_public_key
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source, subject_for
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType, WorkloadRunning
from tests.integration.conftest import Installed

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "cd" * 32
REPO = Path(__file__).resolve().parents[2]


async def _as_admin_enrol(inst: Installed, component: str, public_key: bytes) -> None:
    nc = await connect_as(inst.admin, inst.url, ADMIN)
    try:
        await enrol(nc.jetstream(), inst.admin.data_dir, component, public_key)
    finally:
        await nc.close()


def _running(key: ComponentKey, workload: str, at: datetime | None = None) -> tuple[bytes, dict[str, str], str]:
    event = Event(type=EventType.WORKLOAD_RUNNING, workload_id=workload, source=Source(component="runner"),
                  payload=WorkloadRunning(node_id="n1", image_digest=DIGEST),
                  **({"occurred_at": at} if at else {}))
    data = event.canonical_bytes()
    return data, {"Ccpipe-Signature": signature_header(key, data)}, subject_for(workload, "workload.running")


def _verdict(settings: Settings, signed: tuple[bytes, dict[str, str], str]) -> SignatureVerdict:
    try:
        input_trust(settings.data_dir).accept(*signed)
    except UntrustedEvent as exc:
        assert exc.verdict is not None
        return exc.verdict
    return SignatureVerdict.VALID


async def test_a_component_credential_cannot_write_the_enrolments(installed: Installed) -> None:
    forger = ComponentKey.generate("build")
    admin_key = Ed25519PrivateKey.generate()  # even a well-formed record: the bucket refuses the writer
    record = new_record("build", forger.public_key, admin_key.public_key().public_bytes_raw())
    nc = await connect_as(installed.host("build-host", "build"), installed.url, "build")
    try:
        with pytest.raises((NatsError, asyncio.TimeoutError)):
            await nc.jetstream().publish(f"$KV.{ENROLMENTS}.{record.kv_key}", sign_record(record, admin_key),
                                         timeout=1.0)
        _, blobs = await read_records(nc.jetstream())  # reading is allowed
    finally:
        await nc.close()
    assert all(forger.key_id.encode() not in blob for blob in blobs)


async def test_only_admin_signed_enrolments_are_trusted_and_planted_keys_count_for_nothing(
        installed: Installed) -> None:
    host = installed.host("runner-host", "runner-n1")
    genuine = load_or_create_component_key(host.data_dir, "runner")
    await _as_admin_enrol(installed, "runner", genuine.public_key)
    # someone who can write the bucket (an operator of NATS, or a server without authentication)
    # plants a record signed by a key of their own
    planted = ComponentKey.generate("runner")
    impostor = Ed25519PrivateKey.generate()
    forged = new_record("runner", planted.public_key, impostor.public_key().public_bytes_raw())
    nc = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        await publish_record(nc.jetstream(), forged, sign_record(forged, impostor))
    finally:
        await nc.close()
    # and a key written straight into the host's keyring file, as a component could do itself
    self_registered = ComponentKey.generate("runner")
    register_public_key(host.data_dir, self_registered)

    async with mirrored_enrolments(host, installed.url, "runner-n1") as mirror:
        assert mirror is not None
        assert any("not signed by the pinned admin key" in why for why in mirror.ignored)
        assert _verdict(host, _running(genuine, "wl-genuine")) is SignatureVerdict.VALID
        assert _verdict(host, _running(planted, "wl-planted")) is SignatureVerdict.UNKNOWN_KEY
        assert _verdict(host, _running(self_registered, "wl-self")) is SignatureVerdict.UNKNOWN_KEY


async def test_a_component_enrolled_later_is_trusted_at_its_first_event(installed: Installed) -> None:
    host = installed.host("late-host", "runner-n1")
    async with mirrored_enrolments(host, installed.url, "runner-n1"):
        late = ComponentKey.generate("runner")
        await _as_admin_enrol(installed, "runner", late.public_key)
        # the mirror has not polled yet; the consumer asks it once on the unknown key
        event = await input_trust(host.data_dir).accept_current(*_running(late, "wl-late"))
        assert event.workload_id == "wl-late"


async def test_a_revoked_key_is_refused_from_the_revocation_on(installed: Installed) -> None:
    host = installed.host("revoked-host", "runner-n1")
    key = load_or_create_component_key(host.data_dir, "runner")
    await _as_admin_enrol(installed, "runner", key.public_key)
    async with mirrored_enrolments(host, installed.url, "runner-n1") as mirror:
        assert mirror is not None
        assert _verdict(host, _running(key, "wl-before")) is SignatureVerdict.VALID
        nc = await connect_as(installed.admin, installed.url, ADMIN)
        try:
            record = await revoke(nc.jetstream(), installed.admin.data_dir, "runner", key.key_id)
        finally:
            await nc.close()
        assert record.revoked_at is not None
        assert await mirror.refresh()
        assert _verdict(host, _running(key, "wl-after")) is SignatureVerdict.REVOKED_KEY
        earlier = record.revoked_at - timedelta(seconds=30)
        assert _verdict(host, _running(key, "wl-earlier", earlier)) is SignatureVerdict.VALID
        with pytest.raises(ConfigurationError, match="is revoked"):
            await check_own_enrolment(host, installed.url, "runner-n1", "runner")


def test_serve_refuses_a_key_nobody_enrolled_and_names_the_command_that_enrols_it(installed: Installed) -> None:
    data_dir = installed.root / "unenrolled-host"
    public = (installed.admin.data_dir / "keys" / "admin" / "admin.pub").read_text().strip()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CCPIPE_DATA_DIR": str(data_dir), "CCPIPE_NATS_URL": installed.url,
           "CCPIPE_NATS_CREDS": str(installed.creds / "build.creds"), "CCPIPE_ADMIN_KEY": public}
    out = subprocess.run([sys.executable, "-m", "ccpipe", "serve", "build"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 3, out.stderr
    printed = subprocess.run([sys.executable, "-m", "ccpipe", "admin", "public-key", "build"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert f"ccpipe admin enrol build {printed}" in out.stderr
    # the administrator enrols the printed key with the CLI, on their own data directory
    admin_env = {**os.environ, "PYTHONPATH": str(REPO), "CCPIPE_DATA_DIR": str(installed.admin.data_dir),
                 "CCPIPE_NATS_URL": installed.url, "CCPIPE_NATS_CREDS": str(installed.creds / "admin.creds")}
    subprocess.run([sys.executable, "-m", "ccpipe", "admin", "enrol", "build", printed], env=admin_env,
                   capture_output=True, text=True, timeout=60, check=True)
    listed = subprocess.run([sys.executable, "-m", "ccpipe", "admin", "enrolments"], env=admin_env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert "build " in listed.stdout
    host = load_settings(data_dir=data_dir, nats_creds=installed.creds / "build.creds", admin_key=public)
    asyncio.run(check_own_enrolment(host, installed.url, "build", "build"))  # now it may serve
    # the build host prints its event key and its sealing key (the pushed source is sealed to it)
    assert encode_public(load_or_create_component_key(data_dir, "build").public_key) == printed.split(",")[0]
    assert "," in printed


def test_audit_verify_rebuilds_the_keys_from_the_admin_signed_records(tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats").start()
    settings = load_settings(data_dir=tmp_path / "data", nats_url=nats.url)
    runner = load_or_create_component_key(settings.data_dir, "runner")

    async def fill() -> None:
        await provision_as_admin(settings, nats.url)  # makes the admin key here and enrols this directory's keys
        nc = await connect_as(settings, nats.url, "runner-n1")
        try:
            async with (mirrored_enrolments(settings, nats.url, "observer"),
                        running_audit_log(settings, nats.url) as svc):
                last = 0
                for n in range(3):
                    data, headers, subject = _running(runner, f"wl-{n}")
                    last = (await nc.jetstream().publish(subject, data, headers=headers)).seq
                await svc.wait_logged(last)
        finally:
            await nc.close()

    env = {**os.environ, "PYTHONPATH": str(REPO), "CCPIPE_DATA_DIR": str(settings.data_dir)}

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ccpipe", "audit", "verify", "--store-only"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    try:
        asyncio.run(fill())
    finally:
        nats.stop()
    out = verify()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "enrolments: ok" in out.stdout
    # the keyring file is not what verify trusts: a key planted there changes nothing, and the
    # runner's key stays trusted because its admin-signed record says so
    keyring = settings.data_dir / "keys" / "events" / "keyring.json"
    doc = json.loads(keyring.read_text())
    planted = ComponentKey.generate("runner")
    doc["components"] = {"runner": [{"key_id": planted.key_id, "public_key": encode_public(planted.public_key)}]}
    keyring.write_text(json.dumps(doc))
    assert verify().returncode == 0
    # a record nobody but the admin could have signed is missing: the runner's events are flagged
    records = settings.data_dir / "keys" / "events" / "enrolments.json"
    kept = json.loads(records.read_text())
    records.write_text(json.dumps([r for r in kept if r["record"]["component"] != "runner"]))
    out = verify()
    assert out.returncode == 1 and "UNKNOWN-KEY" in out.stdout, out.stdout
    # and a record signed by another key is named and counts for nothing
    impostor = Ed25519PrivateKey.generate()
    forged = new_record("runner", runner.public_key, impostor.public_key().public_bytes_raw())
    records.write_text(json.dumps([*kept, json.loads(sign_record(forged, impostor))]))
    out = verify()
    assert out.returncode == 1 and "NOT signed by the pinned admin key" in out.stdout, out.stdout
