"""The stdlib-only proof checker: real proofs pass, every tampered field fails, no imports."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import ccpipe.pipeline.audit.offline as offline_module
from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.offline import OfflineProofError, ed25519_verify, verify_proof_offline
from ccpipe.pipeline.audit.proofs import inclusion_proof, proof_document
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.sqlite import SqliteLogStore
from tests.conftest import vector

ORIGIN = "ccpipe.test/audit"


@pytest.fixture
def proof(tmp_path: Path) -> dict[str, Any]:
    log = NoteSigner.generate(ORIGIN)
    store = SqliteLogStore(tmp_path / "log.db")
    entries = [Entry(json.dumps({"id": f"ev-{i}", "n": i}).encode(), stream_seq=i + 1) for i in range(37)]
    store.append(entries)
    note = publish_checkpoint(store, log)
    return proof_document(
        event_id="ev-21",
        leaf=entries[21].data,
        leaf_index=21,
        tree_size=37,
        inclusion_path=inclusion_proof(store.fetch_nodes, 21, 37),
        checkpoint_note=note,
        log_public_key=log.verifier.vkey,
    )


def test_a_real_proof_verifies(proof: dict[str, Any]) -> None:
    result = verify_proof_offline(json.dumps(proof))
    assert (result.event_id, result.leaf_index, result.tree_size, result.origin) == ("ev-21", 21, 37, ORIGIN)


def _mutations(proof: dict[str, Any]) -> dict[str, dict[str, Any]]:
    other = NoteSigner.generate(ORIGIN)
    path = proof["inclusion_path"]
    return {
        "modified leaf": {"leaf": base64.b64encode(b'{"id":"ev-21","n":99}').decode()},
        "another event's id": {"event_id": "ev-22"},
        "wrong index": {"leaf_index": 20},
        "truncated path": {"inclusion_path": path[:-1]},
        "flipped path element": {"inclusion_path": ["00" + path[0][2:], *path[1:]]},
        "wrong tree size": {"tree_size": 38},
        "checkpoint by another key": {"log_public_key": other.verifier.vkey},
        "edited checkpoint": {"checkpoint": proof["checkpoint"].replace("\n37\n", "\n36\n")},
        "unsigned checkpoint": {"checkpoint": proof["checkpoint"].split("\n\n")[0] + "\n"},
        "missing field": {"leaf_index": None},
    }


@pytest.mark.parametrize("attack", list(_mutations({"inclusion_path": ["00"], "checkpoint": ""})))
def test_every_tampered_field_is_refused(proof: dict[str, Any], attack: str) -> None:
    bad = {**proof, **_mutations(proof)[attack]}
    with pytest.raises(OfflineProofError):
        verify_proof_offline(bad)


def test_pure_ed25519_agrees_with_openssl() -> None:
    for i in range(20):
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        msg = os.urandom(i * 7)
        sig = key.sign(msg)
        assert ed25519_verify(pub, msg, sig)
        assert not ed25519_verify(pub, msg + b"x", sig)
        assert not ed25519_verify(pub, msg, sig[:10] + bytes([sig[10] ^ 4]) + sig[11:])
    # S + L is the same signature to a lax verifier; RFC 8032 requires S < L.
    s = int.from_bytes(sig[32:], "little") + offline_module._L
    assert not ed25519_verify(pub, msg, sig[:32] + s.to_bytes(32, "little"))


def test_pure_ed25519_verifies_the_c2sp_spec_note() -> None:
    vkey = vector("merkle/c2sp-signed-note", "example.vkey").read_text().strip()
    note = vector("merkle/c2sp-signed-note", "example.note").read_text()
    text, sig_line = note.split("\n\n")
    raw = base64.b64decode(sig_line.split(" ")[2])
    pub = base64.b64decode(vkey.split("+")[2])[1:]
    assert ed25519_verify(pub, (text + "\n").encode(), raw[4:])
    assert not ed25519_verify(pub, text.encode(), raw[4:])


def test_runs_as_a_standalone_script_with_only_the_standard_library(proof: dict[str, Any], tmp_path: Path) -> None:
    # Copy the file out of the package and run it isolated (-I: no site-packages, no cwd).
    script = tmp_path / "bundle" / "offline.py"
    script.parent.mkdir()
    shutil.copy(offline_module.__file__, script)
    doc = tmp_path / "proof.json"
    doc.write_text(json.dumps(proof))
    ok = subprocess.run([sys.executable, "-I", "-S", str(script), str(doc)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ev-21" in ok.stdout
    doc.write_text(json.dumps({**proof, "leaf_index": 3}))
    bad = subprocess.run([sys.executable, "-I", "-S", str(script), str(doc)], capture_output=True, text=True)
    assert bad.returncode == 1 and "does NOT verify" in bad.stderr
