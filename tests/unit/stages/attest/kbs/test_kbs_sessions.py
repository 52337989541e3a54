"""Sessions: sealed cookies any replica opens, nonces single-use across replicas, expiry."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ccpipe.stages.attest.kbs.errors import NonceInvalid, SessionMissing
from ccpipe.stages.attest.kbs.sessions import MemoryNonceLedger, SessionStore, load_session_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_kbs_session_nonce_is_32_fresh_bytes() -> None:
    store = SessionStore()
    a, b = (store.create("snp", workload_id="w", node_id=None, hash_alg="sha384") for _ in range(2))
    assert len(base64.b64decode(a.nonce)) == 32 and len(a.nonce) == 44
    assert a.nonce != b.nonce and a.id != b.id and len(a.id) == 32 and a.cookie != b.cookie
    assert a.nonce not in a.cookie and b'"w"' not in base64.urlsafe_b64decode(a.cookie + "==")  # sealed


def test_kbs_session_cookie_opens_on_another_replica_with_the_shared_key(tmp_path: Path) -> None:
    one, two = SessionStore.for_data_dir(tmp_path), SessionStore.for_data_dir(tmp_path)
    s = one.create("tdx", workload_id="wl-1", node_id="n1", hash_alg="sha384")
    got = two.get(s.cookie)
    assert (got.id, got.tee, got.nonce, got.workload_id, got.node_id, got.state) == (
        s.id, "tdx", s.nonce, "wl-1", "n1", "authed")
    assert (tmp_path / "keys" / "kbs" / "session.key").stat().st_mode & 0o777 == 0o600


def test_kbs_session_forged_or_foreign_cookies_are_unknown(tmp_path: Path) -> None:
    store = SessionStore.for_data_dir(tmp_path)
    s = store.create("snp", workload_id="w", node_id=None, hash_alg="sha384")
    raw = bytearray(base64.urlsafe_b64decode(s.cookie + "=" * (-len(s.cookie) % 4)))
    raw[20] ^= 0x01
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    other = SessionStore().create("snp", workload_id="w", node_id=None, hash_alg="sha384").cookie
    for bad in (flipped, other, s.cookie[:-4], "not-a-cookie", "%%%", "A" * 20_000, s.id):
        assert store.peek(bad) is None
        with pytest.raises(SessionMissing, match="unknown"):
            store.get(bad)
    with pytest.raises(SessionMissing, match="no kbs-session-id"):
        store.get(None)


def test_kbs_session_a_client_cannot_make_itself_attested(tmp_path: Path) -> None:
    store = SessionStore.for_data_dir(tmp_path)
    s = store.create("snp", workload_id="w", node_id=None, hash_alg="sha384")
    s.state, s.token_claims = "attested", {"exp": 2**40}  # only the server can seal this
    assert store.get(s.cookie).state == "authed"


async def test_kbs_session_nonce_is_single_use_even_after_a_failure() -> None:
    store = SessionStore()
    s = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    await store.begin_attestation(s, s.nonce)
    with pytest.raises(NonceInvalid, match="already used"):
        await store.begin_attestation(store.get(s.cookie), s.nonce)
    t = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    with pytest.raises(NonceInvalid, match="not the nonce"):
        await store.begin_attestation(t, s.nonce)
    with pytest.raises(NonceInvalid, match="already used"):
        await store.begin_attestation(t, t.nonce)  # the wrong guess used it up


async def test_kbs_session_nonce_spent_on_one_replica_is_spent_on_all(tmp_path: Path) -> None:
    ledger = MemoryNonceLedger()  # stands for the shared NATS KV (tested against a real server elsewhere)
    one = SessionStore.for_data_dir(tmp_path, ledger=ledger)
    two = SessionStore.for_data_dir(tmp_path, ledger=ledger)
    s = one.create("snp", workload_id="w", node_id=None, hash_alg="sha384")
    await one.begin_attestation(one.get(s.cookie), s.nonce)
    with pytest.raises(NonceInvalid, match="already used"):
        await two.begin_attestation(two.get(s.cookie), s.nonce)


async def test_kbs_session_attested_cookie_carries_the_claims_and_is_not_reattestable() -> None:
    store = SessionStore()
    s = store.create("snp", workload_id="w", node_id=None, hash_alg="sha384")
    await store.begin_attestation(s, s.nonce)
    attested = store.attested(s, {"jti": "abc", "exp": 9}, "evt-1")
    got = store.get(attested.cookie)
    assert got.state == "attested" and got.token_claims == {"jti": "abc", "exp": 9}
    assert got.attestation_event_id == "evt-1"
    with pytest.raises(NonceInvalid):
        await store.begin_attestation(got, s.nonce)


def test_kbs_session_expires_after_the_timeout() -> None:
    clock = Clock()
    store = SessionStore(timeout_s=300, clock=clock)
    s = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    clock.now += 299
    assert store.get(s.cookie).id == s.id
    clock.now += 2
    peeked = store.peek(s.cookie)
    assert peeked is not None and peeked.id == s.id  # still readable for the audit event of the refusal
    with pytest.raises(SessionMissing, match="expired"):
        store.get(s.cookie)


def test_kbs_session_key_file_must_be_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kbs" / "session.key"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    with pytest.raises(SessionMissing, match="32 bytes"):
        load_session_key(tmp_path)
    assert path.read_bytes() == b"short"  # left as it was
