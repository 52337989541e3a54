"""``ccpipe audit …`` end to end: a real nats-server, the live log, then the commands."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.enclave_runner.tee.sample import SampleBackend
from ccpipe.evidence.measurement import launch_measurement_for
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.pipeline.audit.offline import OfflineProofError, verify_proof_offline
from ccpipe.pipeline.audit.service import running_audit_log
from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit
from ccpipe.pipeline.bus import EventPublisher, connect, provision_stream
from ccpipe.pipeline.cli.main import main
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER
from ccpipe.pipeline.reader import iter_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer, keyring_path
from ccpipe.schemas import events as ev
from ccpipe.schemas.envelope import Event, Source
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.rvps import sample_message
from tests.audit_journeys import Names, journey

pytestmark = pytest.mark.integration


@dataclass
class Trail:
    nats: EmbeddedNats
    data_dir: Path
    attestation_id: str
    tampered_attestation_id: str
    device_attestation_id: str
    tampered_device_id: str
    garbled_devices_id: str


def attestation_events(data_dir: Path) -> list[Event]:
    """A verified attestation of real emulated SNP evidence, and one whose evidence was altered."""
    report_data = hashlib.sha384(b"session").digest()
    ev_ = select_backend(data_dir, prefer="emulated-snp").get_evidence(report_data)
    service = AttestationService.for_data_dir(data_dir, allow_emulated=True)
    service.reference_values.register(
        sample_message({"snp_launch_measurement": [launch_measurement_for().hex()]}), scope="attested-1")
    result = service.appraise(AppraisalRequest(tee=ev_.tee, evidence=ev_.evidence, expected_report_data=report_data,
                                               workload_id="attested-1"))
    assert result.ok

    def verified(evidence: bytes) -> Event:
        return Event(type=ev.EventType.ATTESTATION_VERIFIED, workload_id="attested-1",
                     source=Source(component="attest"),
                     payload=ev.AttestationVerified(
                         tee=ev_.tee, backend=ev_.backend, emulated=True, claims=result.claims,
                         evidence_digest="sha256:" + hashlib.sha256(evidence).hexdigest(),
                         ear_status=result.ear_status, evidence=base64.b64encode(evidence).decode()))

    altered = json.loads(ev_.evidence)
    altered["attestation_report"]["guest_svn"] += 1  # the report no longer matches its signature
    # With a device: a sample device bound to its own report_data, kept as RCAR additional evidence.
    device_rd = hashlib.sha384(b"device binding").digest()
    device = json.loads(SampleBackend().get_evidence(device_rd).evidence)
    with_device = service.appraise(AppraisalRequest(
        tee=ev_.tee, evidence=ev_.evidence, expected_report_data=report_data, workload_id="attested-1",
        devices={"sample": json.dumps(device).encode()}, expected_device_report_data=device_rd))
    assert with_device.ok and with_device.claims["devices"]["sample"]

    def with_devices(devices: dict[str, Any]) -> Event:
        event = verified(ev_.evidence)
        payload = event.payload.model_copy(update={"claims": with_device.claims,
                                                   "additional_evidence": json.dumps(devices)})
        return event.model_copy(update={"payload": payload})

    swapped = {"sample": {**device, "report_data": base64.b64encode(bytes(48)).decode()}}
    garbled = with_devices({"sample": device})
    garbled = garbled.model_copy(update={"payload": garbled.payload.model_copy(
        update={"additional_evidence": '["not", "an object"]'})})
    return [verified(ev_.evidence), verified(json.dumps(altered).encode()), with_devices({"sample": device}),
            with_devices(swapped), garbled]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    root = tmp_path_factory.mktemp("audit-cli")
    nats = EmbeddedNats(root / "nats").start()
    data_dir = root / "data"
    settings = load_settings(data_dir=data_dir, nats_url=nats.url)
    attest = attestation_events(data_dir)

    async def fill() -> None:
        nc = await connect(nats.url, name="fill")
        js = nc.jetstream()
        await provision_stream(js)
        pub = EventPublisher(js, signer=event_signer(data_dir))
        async with running_audit_log(settings, nats.url) as svc:
            last = 0
            for n in range(10):
                for e in journey(n, denied=n == 9):
                    last = (await pub.publish(e)).seq
            for e in attest:
                last = (await pub.publish(e)).seq
            await svc.wait_logged(last)
        await nc.close()

    asyncio.run(fill())
    yield Trail(nats, data_dir, *(e.id for e in attest))
    nats.stop()


def run(trail: Trail, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
        data_dir: Path | None = None) -> tuple[int, str, str]:
    monkeypatch.setenv("CCPIPE_DATA_DIR", str(data_dir or trail.data_dir))
    monkeypatch.setenv("CCPIPE_NATS_URL", trail.nats.url)
    monkeypatch.setenv("CCPIPE_ALLOW_EMULATED", "true")  # as the installation that recorded the trail
    code = main(["audit", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_query_prints_a_table_and_json(trail: Trail, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--who-got", Names(3).key)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "OCCURRED", "(UTC)"]
    assert len(lines) == 2 and "key.released" in lines[1] and Names(3).node in lines[1] and "valid" in lines[1]
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--image", Names(2).image, "--type", "workload.running",
                       "--json")
    rows = json.loads(out)
    assert code == 0 and [r["workload_id"] for r in rows] == [Names(2).workload_id]
    assert rows[0]["event"]["data"]["image_digest"] == Names(2).image
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--workload", "nobody")
    assert code == 1 and "no logged event" in out
    code, _, err = run(trail, monkeypatch, capsys, "query", "--since", "yesterday")
    assert code == 2 and "ISO 8601" in err


def test_prove_prints_the_design_document_that_checks_offline(trail: Trail, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--workload", Names(5).workload_id, "--json")
    event_id = json.loads(out)[6]["event_id"]
    code, out, _ = run(trail, monkeypatch, capsys, "prove", event_id, "--json")
    doc = json.loads(out)
    assert code == 0
    assert set(doc) == {"event_id", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint",
                        "log_public_key"}
    proved = verify_proof_offline(doc)
    assert (proved.event_id, proved.tree_size) == (event_id, doc["tree_size"])
    forged = dict(doc, leaf=base64.b64encode(base64.b64decode(doc["leaf"]).replace(b"node-005", b"node-006")).decode())
    with pytest.raises(OfflineProofError):
        verify_proof_offline(forged)
    code, _, err = run(trail, monkeypatch, capsys, "prove", "no-such-event")
    assert code == 1 and "not in the audit log" in err


def test_export_bundle_verifies_offline_and_detects_tampering(trail: Trail, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "bundle"
    code, _, _ = run(trail, monkeypatch, capsys, "export", "--workload", Names(4).workload_id, str(out_dir))
    assert code == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert len(manifest["events"]) == 10
    # the bundle's own verify.py, by a bare python3 with no ccpipe on its path
    check = subprocess.run([sys.executable, "-I", str(out_dir / "verify.py"), str(out_dir)], capture_output=True,
                           text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    released = out_dir / manifest["events"][6]["file"]
    released.write_bytes(released.read_bytes().replace(Names(4).node.encode(), b"node-299"))
    check = subprocess.run([sys.executable, "-I", str(out_dir / "verify.py"), str(out_dir)], capture_output=True,
                           text=True, cwd=tmp_path)
    assert check.returncode == 1
    assert "not the proved leaf" in check.stderr and "does not verify" in check.stderr


def test_verify_passes_on_an_untouched_trail(trail: Trail, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "verify")
    assert code == 0, out
    assert "store: ok" in out and "stream: ok" in out
    assert "index: ok — its 102 event rows and their search terms are the rebuild from the leaves" in out


def tampered_copy(trail: Trail, tmp_path: Path, *statements: tuple[str, tuple[Any, ...]]) -> Path:
    """A copy of the trail's data directory whose audit database ran ``statements``."""
    copy = tmp_path / "data"
    shutil.copytree(trail.data_dir, copy)
    db = sqlite3.connect(copy / "audit" / "index.sqlite", isolation_level=None)
    for sql, args in statements:
        db.execute(sql, args)
    db.close()
    return copy


def test_verify_names_a_rewritten_key_recipient_in_the_index(trail: Trail, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--who-got", Names(3).key, "--json")
    [release] = json.loads(out)
    copy = tampered_copy(trail, tmp_path, (
        "UPDATE idx_events SET fields = replace(fields, ?, 'node-299'), summary = replace(summary, ?, 'node-299') "
        "WHERE seq = ?", (Names(3).node, Names(3).node, release["seq"])))
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--who-got", Names(3).key, data_dir=copy)
    assert code == 0 and "node-299" in out  # what a user reads from the tampered index
    code, out, _ = run(trail, monkeypatch, capsys, "verify", data_dir=copy)
    assert code == 1
    assert "store: ok" in out and "stream: ok" in out  # the leaves are intact: only the index lies
    where = f"event {release['event_id']} (seq {release['seq']})"
    assert "index: DIFFERS from the rebuild from the leaves (2 differences):" in out, out
    assert f"  index: {where}: fields.node_id is 'node-299' in the index; the leaf gives '{Names(3).node}'" in out
    assert f"  index: {where}: summary is '{Names(3).key} released to node-299' in the index" in out
    code, out, _ = run(trail, monkeypatch, capsys, "verify", "--json", data_dir=copy)
    doc = json.loads(out)
    assert code == 1 and not doc["ok"] and not doc["index"]["ok"]
    assert doc["index"]["differences"][1] == {"table": "idx_events", "where": where, "column": "fields.node_id",
                                              "stored": "'node-299'", "expected": repr(Names(3).node)}


def test_verify_names_deleted_key_releases_and_flipped_verdicts(trail: Trail, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "query", "--type", "key.released", "--json")
    releases = json.loads(out)
    assert code == 0 and len(releases) == 9
    copy = tampered_copy(
        trail, tmp_path,
        ("DELETE FROM idx_terms WHERE seq IN (SELECT seq FROM idx_events WHERE type = 'key.released')", ()),
        ("DELETE FROM idx_events WHERE type = 'key.released'", ()),
        ("UPDATE idx_events SET signature = 'bad_signature' WHERE seq = 1", ()))
    code, out, _ = run(trail, monkeypatch, capsys, "verify", data_dir=copy)
    assert code == 1
    for r in releases:
        assert f"  index: event {r['event_id']} (seq {r['seq']}): the index lacks its idx_events row (" in out
    assert "(seq 1): signature is 'bad_signature' in the index; the leaf gives 'valid'" in out


def test_verify_says_when_the_stream_was_not_checked(trail: Trail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    copy = tampered_copy(trail, tmp_path)
    monkeypatch.setenv("CCPIPE_DATA_DIR", str(copy))
    monkeypatch.delenv("CCPIPE_NATS_URL", raising=False)  # the services are stopped
    code = main(["audit", "verify"])
    out = capsys.readouterr().out
    assert code == 1
    assert "store: ok" in out and "index: ok" in out
    assert f"stream: NOT CHECKED — no ccpipe services are running for data directory {copy}" in out
    assert "run 'ccpipe audit verify --store-only' to check the store alone" in out
    code = main(["audit", "verify", "--store-only"])
    out = capsys.readouterr().out
    assert code == 0 and "store: ok" in out and "stream" not in out
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"nats://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("CCPIPE_NATS_URL", closed)
    code = main(["audit", "verify"])
    out = capsys.readouterr().out
    assert code == 1 and f"stream: NOT CHECKED — cannot reach NATS at {closed}" in out


TAMPER = {
    "deleted": [("DELETE FROM leaves WHERE idx = 17", ())],
    "modified": [("UPDATE leaves SET data = replace(data, 'node-001', 'node-299') WHERE idx = 16", ())],
    "reordered": [("UPDATE leaves SET idx = -1 WHERE idx = 12", ()),
                  ("UPDATE leaves SET idx = 12 WHERE idx = 13", ()),
                  ("UPDATE leaves SET idx = 13 WHERE idx = -1", ())],
    "inserted": [("UPDATE leaves SET idx = -idx - 1 WHERE idx >= 20", ()),
                 ("UPDATE leaves SET idx = -idx WHERE idx < 0", ()),
                 ("INSERT INTO leaves SELECT 20, 99999, event_id, leaf_hash, data, signature FROM leaves "
                  "WHERE idx = 3", ())],
}
EXPECTED_INDEX = {"deleted": 17, "modified": 16, "reordered": 12, "inserted": 20}


@pytest.mark.parametrize("damage", sorted(TAMPER))
def test_a_rogue_admin_editing_the_store_is_named(trail: Trail, tmp_path: Path, damage: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "data"
    shutil.copytree(trail.data_dir, copy)
    db = sqlite3.connect(copy / "audit" / "index.sqlite", isolation_level=None)
    for sql, args in TAMPER[damage]:
        db.execute(sql, args)
    db.close()
    code, out, _ = run(trail, monkeypatch, capsys, "verify", data_dir=copy)
    assert code == 1
    assert f"store: DAMAGED at leaf {EXPECTED_INDEX[damage]}: {damage}" in out, out
    assert "stream: ok" in out  # the stream itself was not touched, and still matches the checkpoints
    code, out, _ = run(trail, monkeypatch, capsys, "verify", "--json", "--source", "store", data_dir=copy)
    report = json.loads(out)["reports"][0]
    assert code == 1 and report["finding"]["damage"] == damage and report["finding"]["index"] == EXPECTED_INDEX[damage]


@pytest.fixture
def tailed(tmp_path: Path) -> Iterator[tuple[EmbeddedNats, Path]]:
    """A trail whose last ten leaves no checkpoint covers yet: journey 0 logged and checkpointed
    by the audit service, journey 1 published while it was stopped and then logged by its ingest."""
    nats = EmbeddedNats(tmp_path / "nats").start()
    data_dir = tmp_path / "data"

    async def fill() -> list[StreamMessage]:
        nc = await connect(nats.url, name="fill")
        js = nc.jetstream()
        await provision_stream(js)
        pub = EventPublisher(js, signer=event_signer(data_dir))
        async with running_audit_log(load_settings(data_dir=data_dir, nats_url=nats.url), nats.url) as svc:
            await svc.wait_logged(max([(await pub.publish(e)).seq for e in journey(0)]))
        for e in journey(1):
            await pub.publish(e)
        msgs = [StreamMessage(m.seq, m.data, m.headers.get(SIGNATURE_HEADER)) async for m in iter_events(js)]
        await nc.close()
        return msgs

    msgs = asyncio.run(fill())
    with SqliteAudit(data_dir / "audit" / "index.sqlite") as store:
        assert store.size() == 10
        Ingestor(store, KeyringFile(keyring_path(data_dir))).ingest(msgs[10:])
    yield nats, data_dir
    nats.stop()


def test_verify_compares_the_tail_with_the_stream(tailed: tuple[EmbeddedNats, Path], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    nats, data_dir = tailed
    monkeypatch.setenv("CCPIPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CCPIPE_NATS_URL", nats.url)
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "store: ok — 10 leaves match the signed checkpoint of size 10" in out
    assert "tail: ok — the 10 leaves after the checkpoint of size 10 are the stream's messages" in out
    assert "index: ok — its 20 event rows" in out
    # With the services stopped, the tail is said to be unchecked: exit 1, or 0 when only the store was asked for.
    monkeypatch.delenv("CCPIPE_NATS_URL")
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "the leaves after the last checkpoint are unchecked" in out
    assert ("tail: NOT CHECKED — 10 leaves after the checkpoint of size 10 were not compared with the stream "
            "(the stream is unreachable: no ccpipe services are running") in out
    assert main(["audit", "verify", "--store-only"]) == 0
    out = capsys.readouterr().out
    assert "tail: NOT CHECKED — 10 leaves after the checkpoint of size 10 were not compared with the stream " \
           "(--store-only)" in out


def test_verify_names_a_forged_tail_leaf(tailed: tuple[EmbeddedNats, Path], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    nats, data_dir = tailed
    db = sqlite3.connect(data_dir / "audit" / "index.sqlite", isolation_level=None)
    [(data,)] = db.execute("SELECT data FROM leaves WHERE idx = 16").fetchall()
    forged = bytes(data).replace(Names(1).node.encode(), b"node-299")
    assert b'"type":"dev.ccpipe.key.released"' in forged and forged != data
    # Leaf, leaf hash and index rewritten together, as the forged event would have been indexed: the
    # index matches the forged leaf, and no checkpoint covers it yet. Only the stream can tell.
    db.execute("UPDATE leaves SET data = ?, leaf_hash = ? WHERE idx = 16", (forged, leaf_hash(forged)))
    db.execute("UPDATE idx_events SET fields = replace(fields, ?, 'node-299'), summary = replace(summary, ?, "
               "'node-299'), signature = 'bad_signature' WHERE seq = 17", (Names(1).node, Names(1).node))
    db.execute("UPDATE idx_terms SET value = 'node-299' WHERE kind = 'node' AND seq = 17")
    db.close()
    monkeypatch.setenv("CCPIPE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CCPIPE_NATS_URL", raising=False)
    assert main(["audit", "verify", "--store-only"]) == 0  # the store alone cannot tell
    capsys.readouterr()
    monkeypatch.setenv("CCPIPE_NATS_URL", nats.url)
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "tail: DAMAGED at leaf 16: modified — leaf 16's bytes differ from stream message 17's" in out
    assert "store: ok" in out and "stream: ok" in out and "index: ok" in out


def test_reverify_repeats_the_recorded_verdict(trail: Trail, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "reverify", trail.attestation_id, "--json")
    result = json.loads(out)
    assert code == 0 and result["same"] and result["now"]["verdict"] == "verified"
    # the same evidence is refused when emulated hardware is not accepted: the verdict differs
    code, out, _ = run(trail, monkeypatch, capsys, "reverify", trail.attestation_id, "--no-emulated")
    assert code == 1 and "DIFFERENT verdict" in out


def test_reverify_checks_the_devices_evidence_too(trail: Trail, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "reverify", trail.device_attestation_id, "--json")
    assert code == 0 and json.loads(out)["same"]
    # The primary evidence is intact, but the recorded device evidence no longer carries the binding.
    code, out, _ = run(trail, monkeypatch, capsys, "reverify", trail.tampered_device_id, "--json")
    result = json.loads(out)
    assert code == 1 and not result["same"] and result["now"]["reason"] == "attest.evidence.report_data"
    # Recorded additional evidence that is not {tee: evidence} is named, not re-verified.
    code, _, err = run(trail, monkeypatch, capsys, "reverify", trail.garbled_devices_id)
    assert code != 0 and "recorded additional evidence" in err and "JSON object" in err


def test_reverify_exposes_a_verified_event_whose_evidence_does_not_verify(
        trail: Trail, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(trail, monkeypatch, capsys, "reverify", trail.tampered_attestation_id, "--json")
    result = json.loads(out)
    assert code == 1 and not result["same"] and result["now"]["verdict"] == "rejected"
    code, _, err = run(trail, monkeypatch, capsys, "reverify", trail.attestation_id.replace("-", "x"))
    assert code == 1 and "not in the audit log" in err
