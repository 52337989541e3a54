"""Enrolment records: only what the pinned admin key signed counts, and a revoked key stops counting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.pipeline.enrolment import (
    EnrolmentError,
    enrolled_keys,
    init_admin,
    load_admin_key,
    new_record,
    open_record,
    pin_admin_public,
    pinned_admin_public,
    sign_record,
)
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.pipeline.event_trust import SignatureVerdict, check_event_signature
from ccpipe.pipeline.signing import ComponentKeyring, enrolled_mode
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType, WorkloadRunning

DIGEST = "sha256:" + "ab" * 32


def _admin() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes_raw()


def _enrolled(admin: Ed25519PrivateKey, component: str, key: ComponentKey) -> bytes:
    record = new_record(component, key.public_key, admin.public_key().public_bytes_raw())
    return sign_record(record, admin)


def test_a_record_the_admin_signed_opens_and_names_the_key() -> None:
    admin, public = _admin()
    key = ComponentKey.generate("build")
    record = open_record(_enrolled(admin, "build", key), public)
    assert (record.component, record.key_id, record.public_key) == ("build", key.key_id, key.public_key)
    assert record.revoked_at is None


def test_a_record_signed_by_another_key_or_altered_is_refused() -> None:
    admin, public = _admin()
    forger, _ = _admin()
    key = ComponentKey.generate("build")
    with pytest.raises(EnrolmentError, match="not signed by the pinned admin key"):
        open_record(_enrolled(forger, "build", key), public)
    # a genuine record re-labelled for another component: the signature no longer covers it
    doc = json.loads(_enrolled(admin, "build", key))
    doc["record"]["component"] = "sign"
    with pytest.raises(EnrolmentError, match="not signed by the pinned admin key"):
        open_record(json.dumps(doc).encode(), public)
    with pytest.raises(EnrolmentError, match="malformed"):
        open_record(b"{not json", public)


def test_the_trusted_keys_are_the_admin_signed_ones_only() -> None:
    admin, public = _admin()
    forger, _ = _admin()
    genuine, planted = ComponentKey.generate("build"), ComponentKey.generate("build")
    found = enrolled_keys([_enrolled(admin, "build", genuine), _enrolled(forger, "build", planted)], public)
    assert [k.key_id for k in found.keys] == [genuine.key_id]
    assert len(found.ignored) == 1 and "not signed by the pinned admin key" in found.ignored[0]


def test_a_key_enrolled_for_two_components_is_trusted_for_neither_afterwards() -> None:
    admin, public = _admin()
    key = ComponentKey.generate("build")
    found = enrolled_keys([_enrolled(admin, "build", key), _enrolled(admin, "sign", key)], public)
    assert "trusted for neither" in found.ignored[0]
    assert [k.revoked_at is not None for k in found.keys] == [True]


def _running(key: ComponentKey, at: datetime) -> tuple[bytes, str]:
    event = Event(type=EventType.WORKLOAD_RUNNING, workload_id="wl-1", occurred_at=at,
                  source=Source(component="runner", key_id=key.key_id),
                  payload=WorkloadRunning(node_id="n1", image_digest=DIGEST))
    data = event.canonical_bytes()
    return data, signature_header(key, data)


def test_a_revoked_key_counts_for_what_it_signed_before_the_revocation_only() -> None:
    admin, public = _admin()
    key = ComponentKey.generate("runner")
    record = new_record("runner", key.public_key, public)
    revoked_at = datetime.now(UTC)
    ring = ComponentKeyring()
    for k in enrolled_keys([sign_record(record.revoked(revoked_at), admin)], public).keys:
        ring.add(k.component, k.public_key, revoked_at=k.revoked_at)
    before = _running(key, revoked_at - timedelta(seconds=5))
    after = _running(key, revoked_at + timedelta(seconds=5))
    assert check_event_signature(ring, before[0], before[1]).verdict is SignatureVerdict.VALID
    assert check_event_signature(ring, after[0], after[1]).verdict is SignatureVerdict.REVOKED_KEY


def test_the_keyring_file_keeps_revocations(tmp_path: Path) -> None:
    key = ComponentKey.generate("runner")
    ring = ComponentKeyring()
    when = datetime(2026, 12, 1, tzinfo=UTC)
    ring.add("runner", key.public_key, revoked_at=when)
    ring.save(tmp_path / "keyring.json")
    entry = ComponentKeyring.load(tmp_path / "keyring.json").get(key.key_id)
    assert entry is not None and entry.revoked_at == when


def test_the_admin_key_is_made_once_and_a_pinned_key_is_never_replaced(tmp_path: Path) -> None:
    public = init_admin(tmp_path)
    assert enrolled_mode(tmp_path) and pinned_admin_public(tmp_path) == public
    assert load_admin_key(tmp_path).public_key().public_bytes_raw() == public
    assert (tmp_path / "keys" / "admin" / "admin.key").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigurationError, match="already exists"):
        init_admin(tmp_path)
    _, other = _admin()
    with pytest.raises(ConfigurationError, match="already trusts admin key"):
        pin_admin_public(tmp_path, other)
    pin_admin_public(tmp_path, public)  # the same key again: fine



def test_a_bad_enrolment_line_or_admin_key_is_refused_naming_it(tmp_path: Path) -> None:
    from ccpipe.pipeline.enrolment_bus import enrolment_token, parse_enrolment_token, require_admin_key
    from ccpipe.pipeline.settings import load_settings
    from ccpipe.schemas.errors import InvalidInput

    with pytest.raises(InvalidInput, match="the event key is not a base64 Ed25519 public key"):
        parse_enrolment_token("not-a-key", "build")
    event_only = enrolment_token(tmp_path, "attest")
    with pytest.raises(InvalidInput, match="its enrolment needs KEY,SEALING_KEY"):
        parse_enrolment_token(event_only, "sign")  # the sign stage's line lacks its sealing key
    with pytest.raises(InvalidInput, match="build receives sealed artifacts"):
        parse_enrolment_token(event_only, "build")  # so does the build stage's (it opens the pushed source)
    with pytest.raises(InvalidInput, match="sealing key of sign is not base64url JSON"):
        parse_enrolment_token(event_only + ",%%%", "sign")
    with pytest.raises(EnrolmentError, match="not a P-256 public JWK"):
        new_record("sign", ComponentKey.generate("sign").public_key, bytes(32), {"kty": "oct", "k": "x"})
    token = parse_enrolment_token(enrolment_token(tmp_path, "sign"), "sign")
    assert len(token.public_key) == 32 and token.sealing_key is not None and token.sealing_key["crv"] == "P-256"
    assert token.emulated_roots is None
    with pytest.raises(InvalidInput, match="CCPIPE_ADMIN_KEY is not a base64 Ed25519 public key"):
        require_admin_key(load_settings(data_dir=tmp_path / "host", admin_key="AAAA"))
