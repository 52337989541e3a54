"""Event signatures: keys on disk, the header, verdicts for every attack, the keyring file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.event_signing import Keyring, keyring_from
from ccpipe.pipeline.event_signature import (
    ComponentKey,
    MalformedSignature,
    format_signature_header,
    key_id_for,
    load_component_key,
    load_or_create_component_key,
    parse_signature_header,
    sign_event,
    signature_header,
)
from ccpipe.pipeline.event_trust import SignatureVerdict, check_event_signature, verify_event_signature
from ccpipe.pipeline.keyfiles import KeyMaterialError


def event(component: str = "build", key_id: str | None = None, body: str = "hi", etype: str = "built") -> bytes:
    source: dict[str, str] = {"component": component}
    if key_id:
        source["key_id"] = key_id
    return json.dumps({"id": "e1", "type": etype, "workload_id": "wl-1", "source": source, "payload": body},
                      sort_keys=True).encode()


def test_component_key_file_is_0600_and_reloads(tmp_path: Path) -> None:
    key = load_or_create_component_key(tmp_path, "build")
    path = tmp_path / "keys" / "events" / "build.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_component_key(tmp_path, "build").key_id == key.key_id
    path.chmod(0o640)
    with pytest.raises(KeyMaterialError, match="other users"):
        load_component_key(tmp_path, "build")


def test_component_names_cannot_escape_the_key_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="not allowed"):
        load_or_create_component_key(tmp_path, "../etc")


def test_key_id_is_truncated_sha256_of_the_raw_key() -> None:
    key = ComponentKey.generate("sign")
    assert key.key_id == key_id_for(key.public_key)
    assert len(key.key_id) == 32 and int(key.key_id, 16) >= 0


def test_a_valid_signature_from_the_claimed_component_is_valid() -> None:
    key = ComponentKey.generate("build")
    ring = keyring_from([key])
    data = event("build", key.key_id)
    check = check_event_signature(ring, data, signature_header(key, data))
    assert check.verdict is SignatureVerdict.VALID
    assert (check.signer, check.claimed) == ("build", "build")


def test_a_component_signing_a_type_it_may_not_emit_is_flagged() -> None:
    # the build component's own key, honestly named, on a `signed` event: only the sign stage emits those
    key = ComponentKey.generate("build")
    data = event("build", key.key_id, etype="signed")
    check = check_event_signature(keyring_from([key]), data, signature_header(key, data))
    assert check.verdict is SignatureVerdict.NOT_EMITTER
    assert check.signer == "build"


def test_a_genuine_event_stored_under_another_subject_is_flagged() -> None:
    key = ComponentKey.generate("build")
    data = event("build", key.key_id)
    header = signature_header(key, data)
    ring = keyring_from([key])
    assert check_event_signature(ring, data, header, subject="ccpipe.evt.wl-1.built").verdict is SignatureVerdict.VALID
    replayed = check_event_signature(ring, data, header, subject="ccpipe.evt.victim.built")
    assert replayed.verdict is SignatureVerdict.WRONG_SUBJECT


def test_every_forgery_is_flagged_with_its_own_verdict() -> None:
    build, attest = ComponentKey.generate("build"), ComponentKey.generate("attest")
    ring = keyring_from([build, attest])
    data = event("build")
    header = signature_header(build, data)
    # the bytes changed after signing
    assert check_event_signature(ring, event("build", body="changed"), header).verdict is SignatureVerdict.BAD_SIGNATURE
    # a key the trail never registered
    outsider = ComponentKey.generate("build")
    assert check_event_signature(ring, data, signature_header(outsider, data)).verdict is SignatureVerdict.UNKNOWN_KEY
    # a build worker signing a key.released "from attest"
    forged = event("attest")
    assert check_event_signature(ring, forged, signature_header(build, forged)).verdict is SignatureVerdict.WRONG_SIGNER
    # the event names one key, another key of the same component signed it
    rotated = ComponentKey.generate("build")
    ring.add("build", rotated.public_key)
    named = event("build", key_id=build.key_id)
    assert check_event_signature(ring, named, signature_header(rotated, named)).verdict is SignatureVerdict.WRONG_SIGNER
    assert check_event_signature(ring, data, None).verdict is SignatureVerdict.UNSIGNED
    assert check_event_signature(ring, data, "garbage").verdict is SignatureVerdict.MALFORMED


def test_signatures_are_domain_separated_from_plain_ed25519_over_the_bytes() -> None:
    key = ComponentKey.generate("build")
    data = event()
    plain = key.private_key.sign(data)  # what a naive signer would produce
    assert verify_event_signature(keyring_from([key]), key.key_id, data, plain) is SignatureVerdict.BAD_SIGNATURE
    assert (
        verify_event_signature(keyring_from([key]), key.key_id, data, sign_event(key, data)) is SignatureVerdict.VALID
    )


ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def test_a_malleated_signature_is_bad() -> None:
    # S + L verifies under the plain group equation; a strict verifier must refuse it, or one
    # event would have two valid signature headers.
    key = ComponentKey.generate("build")
    data = event()
    good = sign_event(key, data)
    s = int.from_bytes(good[32:], "little") + ED25519_ORDER
    forged = good[:32] + s.to_bytes(32, "little")
    ring = keyring_from([key])
    assert verify_event_signature(ring, key.key_id, data, forged) is SignatureVerdict.BAD_SIGNATURE
    assert verify_event_signature(ring, key.key_id, data, good) is SignatureVerdict.VALID


def test_a_signature_by_another_registered_key_id_is_bad() -> None:
    # The header names key A but carries key B's signature: checked against A, so refused.
    a, b = ComponentKey.generate("build"), ComponentKey.generate("build")
    data = event()
    ring = keyring_from([a, b])
    assert verify_event_signature(ring, a.key_id, data, sign_event(b, data)) is SignatureVerdict.BAD_SIGNATURE


def test_header_format_round_trips_and_rejects_junk() -> None:
    key = ComponentKey.generate("build")
    sig = sign_event(key, b"x")
    value = format_signature_header(key.key_id, sig)
    assert value.startswith(key.key_id + ":")
    assert parse_signature_header(value) == (key.key_id, sig)
    for bad in ("", key.key_id, f"{key.key_id}:!!", f"short:{value.split(':')[1]}", f"{key.key_id}:AAAA"):
        with pytest.raises(MalformedSignature):
            parse_signature_header(bad)


def test_keyring_saves_loads_and_refuses_tampering(tmp_path: Path) -> None:
    build, sign = ComponentKey.generate("build"), ComponentKey.generate("sign")
    ring = keyring_from([build, sign])
    log = NoteSigner.generate("ccpipe.test/audit")
    ring.add_log_key(log.verifier.vkey)
    path = tmp_path / "keyring.json"
    ring.save(path)
    loaded = Keyring.load(path)
    assert loaded.components() == ["build", "sign"]
    assert loaded.get(build.key_id) == ring.get(build.key_id)
    assert loaded.log_keys == [log.verifier]
    doc = json.loads(path.read_text())
    doc["components"]["build"][0]["key_id"] = sign.key_id  # claim another key's id
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyMaterialError):
        Keyring.load(path)
    path.write_text("{not json")
    with pytest.raises(KeyMaterialError, match="cannot read"):
        Keyring.load(path)


def test_one_key_cannot_belong_to_two_components() -> None:
    key = ComponentKey.generate("build")
    ring = keyring_from([key])
    with pytest.raises(KeyMaterialError, match="already registered"):
        ring.add("attest", key.public_key)
