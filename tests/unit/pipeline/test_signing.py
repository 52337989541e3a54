"""The runtime side of event signing: keys on first use, registration in the trail's keyring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.event_signature import ComponentKey
from ccpipe.pipeline.event_trust import SignatureVerdict, check_event_signature
from ccpipe.pipeline.keyfiles import KeyMaterialError
from ccpipe.pipeline.signing import component_key, event_signer, keyring_path, register_public_key
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Failed, WorkloadRunning
from ccpipe.schemas.failure import FailureReason

DIGEST = "sha256:" + "ef" * 32


def running(component: str) -> Event:
    return Event(type=EventType.WORKLOAD_RUNNING, workload_id="wl-1", source=Source(component=component),
                 payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))


def build_failed() -> Event:
    reason = FailureReason(stage="build", code="build.x", message="no base image")
    return Event(type=EventType.FAILED, workload_id="wl-1", source=Source(component="build"),
                 payload=Failed(reason=reason, input_event_id="e0", attempts=1))


def test_each_component_signs_with_its_own_registered_key(tmp_path: Path) -> None:
    sign = event_signer(tmp_path)
    a, b = build_failed(), running("runner")
    headers = {e.source.component: sign(e) for e in (a, b)}
    ring = Keyring.load(keyring_path(tmp_path))
    assert ring.components() == ["build", "runner"]
    for event in (a, b):
        header = headers[event.source.component]["Ccpipe-Signature"]
        assert check_event_signature(ring, event.canonical_bytes(), header).verdict == SignatureVerdict.VALID
    # build's signature on runner's event is not accepted as runner's
    forged = check_event_signature(ring, b.canonical_bytes(), sign(running("build"))["Ccpipe-Signature"])
    assert forged.verdict != SignatureVerdict.VALID
    # the same key comes back on the next start
    assert component_key(tmp_path, "build").key_id == ring.keys_of("build")[0].key_id


def test_a_corrupt_keyring_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(KeyMaterialError, match="keyring"):
        register_public_key(tmp_path, ComponentKey.generate("sign"))
    assert path.read_text() == "{not json"


def test_a_key_already_registered_to_another_component_is_refused(tmp_path: Path) -> None:
    key = ComponentKey.generate("kbs")
    register_public_key(tmp_path, key)
    with pytest.raises(KeyMaterialError, match="already registered"):
        register_public_key(tmp_path, ComponentKey("runner", key.private_key))
    assert Keyring.load(keyring_path(tmp_path)).components() == ["kbs"]


def test_registering_a_component_keeps_the_audit_logs_keys(tmp_path: Path) -> None:
    """The runtime does not parse the log's keys, but must not drop them when it rewrites the file."""
    register_public_key(tmp_path, ComponentKey.generate("build"))
    assert json.loads(keyring_path(tmp_path).read_text())["log_keys"] == []  # same shape as the audit writes
    ring = Keyring.load(keyring_path(tmp_path))
    log = NoteSigner.generate("ccpipe-audit")
    ring.add_log_key(log.verifier)
    ring.save(keyring_path(tmp_path))
    register_public_key(tmp_path, ComponentKey.generate("sign"))
    after = Keyring.load(keyring_path(tmp_path))
    assert after.components() == ["build", "sign"]
    assert after.log_keys == [log.verifier]
