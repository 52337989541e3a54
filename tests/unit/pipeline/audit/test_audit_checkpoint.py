"""C2SP signed notes and checkpoints: the spec's vectors, multiple and unknown signers, attacks."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.logkey import LEGACY_LOG_KEY_NAME, load_keyring, log_key_path, log_signer, new_log_origin
from ccpipe.pipeline.keyfiles import KeyMaterialError
from tests.conftest import vector


def spec_key() -> NoteVerifier:
    return NoteVerifier.from_vkey(vector("merkle/c2sp-signed-note", "example.vkey").read_text())


def test_the_spec_example_note_verifies_with_the_spec_key() -> None:
    key = spec_key()
    assert key.key_hash.hex() == "530d903a"  # SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]
    note, sigs = open_note(vector("merkle/c2sp-signed-note", "example.note").read_bytes(), [key])
    assert note.text == "This is an example message.\n"
    assert [s.name for s in sigs] == ["example.com/foo"]


def test_the_spec_example_note_is_refused_when_one_byte_changes() -> None:
    data = vector("merkle/c2sp-signed-note", "example.note").read_bytes().replace(b"example", b"exbmple", 1)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(data, [spec_key()])


def test_the_spec_checkpoint_example_parses() -> None:
    note = parse_note(vector("merkle/c2sp-signed-note", "checkpoint-format-example.note").read_bytes())
    cp = Checkpoint.from_text(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert base64.b64encode(cp.root).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    # Signed by a key the spec does not publish: unknown signers never verify a note.
    with pytest.raises(CheckpointError, match="no trusted key"):
        open_note(vector("merkle/c2sp-signed-note", "checkpoint-format-example.note").read_bytes(), [spec_key()])


ORIGIN = "ccpipe.test/audit"
CP = Checkpoint(ORIGIN, 42, bytes(range(32)))


def test_checkpoint_round_trip_and_format() -> None:
    log = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(CP, log)
    text, sig_line = note.decode().split("\n\n")
    assert text == f"{ORIGIN}\n42\n{base64.b64encode(CP.root).decode()}"
    assert sig_line.startswith(f"\u2014 {ORIGIN} ") and sig_line.endswith("\n")
    assert open_checkpoint(note, [log.verifier], origin=ORIGIN) == CP
    with pytest.raises(CheckpointError, match="not 'other'"):
        open_checkpoint(note, [log.verifier], origin="other")


def test_witness_cosignatures_and_unknown_signers_are_ignored_not_fatal() -> None:
    log, witness, unknown = (NoteSigner.generate(n) for n in (ORIGIN, "witness.example/w1", "x.example/y"))
    note = sign_note(CP.text(), [log, witness, unknown])
    _, sigs = open_note(note, [log.verifier])
    assert [s.name for s in sigs] == [ORIGIN]
    _, sigs = open_note(note, [log.verifier, witness.verifier])
    assert {s.name for s in sigs} == {ORIGIN, "witness.example/w1"}
    # Same name as the log, different key: ignored (the spec says name AND id identify a key).
    impostor = NoteSigner.generate(ORIGIN)
    assert open_checkpoint(sign_note(CP.text(), [impostor, log]), [log.verifier]) == CP


def test_a_forged_signature_by_a_known_key_rejects_the_note() -> None:
    log = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(CP, log).decode()
    text, sig = note.split("\n\n")
    raw = bytearray(base64.b64decode(sig.split(" ")[2]))
    raw[10] ^= 1
    forged = f"{text}\n\n\u2014 {ORIGIN} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(forged, [log.verifier])


def test_a_checkpoint_rewritten_after_signing_is_refused() -> None:
    log = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(CP, log).replace(b"\n42\n", b"\n43\n")
    with pytest.raises(CheckpointError):
        open_checkpoint(note, [log.verifier])


@pytest.mark.parametrize(
    ("note", "why"),
    [
        (b"text\n\xe2\x80\x94 a AAAAAAA=\n", "no blank line"),
        (b"text\n\n- a AAAAAAAA\n", "em dash"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAAA", "do not end in a newline"),
        (b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAAA\n", "control character"),
        (b"text\n\n\xe2\x80\x94 a!! AAAA\n", "malformed|base64"),
        (b"\xff\n\n\xe2\x80\x94 a AAAAAAAA\n", "UTF-8"),
        (b"text\n\n" + b"\xe2\x80\x94 a AAAAAAAA\n" * 101, "more than 100"),
    ],
)
def test_malformed_notes_are_refused(note: bytes, why: str) -> None:
    with pytest.raises(CheckpointError, match=why):
        parse_note(note)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("o\n042\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "31 bytes"),
        ("o\n1\n", "origin, size and root"),
        ("o\n1\n" + base64.b64encode(bytes(32)).decode(), "newline"),
    ],
)
def test_malformed_checkpoint_text_is_refused(text: str, why: str) -> None:
    with pytest.raises(CheckpointError, match=why):
        Checkpoint.from_text(text)


def test_keys_round_trip_and_bad_vkeys_are_refused() -> None:
    for _ in range(20):  # base64 with '+' inside must survive the '+'-separated format
        log = NoteSigner.generate(ORIGIN)
        assert NoteSigner.from_skey(log.skey()).verifier == log.verifier
        assert NoteVerifier.from_vkey(log.verifier.vkey) == log.verifier
    name, _, rest = spec_key().vkey.partition("+")
    with pytest.raises(KeyMaterialError, match="does not match"):
        NoteVerifier.from_vkey(f"{name}+00000000+{rest.partition('+')[2]}")
    with pytest.raises(KeyMaterialError):
        NoteVerifier.from_vkey("no-plus-signs")


def test_log_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "log.key"
    first = NoteSigner.load_or_create(path, ORIGIN)
    assert path.stat().st_mode & 0o777 == 0o600
    assert NoteSigner.load_or_create(path, ORIGIN).verifier == first.verifier
    with pytest.raises(KeyMaterialError, match="named"):
        NoteSigner.load_or_create(path, "another.example/log")
    path.chmod(0o644)
    with pytest.raises(KeyMaterialError, match="accessible by other users") as info:
        NoteSigner.load_or_create(path, ORIGIN)
    assert info.value.hint == f"run: chmod 600 {path}"


def test_each_installation_gets_a_unique_origin_and_an_existing_log_keeps_its_own(tmp_path: Path) -> None:
    a, b = log_signer(tmp_path / "a"), log_signer(tmp_path / "b")
    assert a.name != b.name
    for signer in (a, b):
        host, ccpipe, ident = signer.name.split("/")
        assert host and ccpipe == "ccpipe" and re.fullmatch(r"[0-9a-f]{16}", ident)
    assert log_signer(tmp_path / "a").name == a.name  # stored with the key, chosen once
    assert new_log_origin("Build Host_7.example.").startswith("buildhost7.example/ccpipe/")
    assert new_log_origin("").startswith("localhost/ccpipe/")
    # A log created when every origin was "ccpipe-audit" keeps it: its checkpoints still verify.
    old = tmp_path / "old"
    legacy = NoteSigner.load_or_create(log_key_path(old), LEGACY_LOG_KEY_NAME)
    kept = log_signer(old)
    assert (kept.name, kept.verifier) == (LEGACY_LOG_KEY_NAME, legacy.verifier)
    assert [v.name for v in load_keyring(old).log_keys] == [LEGACY_LOG_KEY_NAME]
    note = sign_checkpoint(Checkpoint(kept.name, 3, bytes(32)), kept)
    assert open_checkpoint(note, load_keyring(old).log_keys).origin == LEGACY_LOG_KEY_NAME
