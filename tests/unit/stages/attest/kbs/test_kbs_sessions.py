"""Sessions: nonces are single-use and sessions expire."""

from __future__ import annotations

import base64

import pytest

from stages.attest.kbs.errors import NonceInvalid, SessionMissing
from stages.attest.kbs.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_kbs_session_nonce_is_32_fresh_bytes() -> None:
    store = SessionStore()
    a, b = (store.create("snp", workload_id="w", node_id=None, hash_alg="sha384") for _ in range(2))
    assert len(base64.b64decode(a.nonce)) == 32 and len(a.nonce) == 44
    assert a.nonce != b.nonce and a.id != b.id and len(a.id) == 32


def test_kbs_session_nonce_is_single_use_even_after_a_failure() -> None:
    store = SessionStore()
    s = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    store.begin_attestation(s, s.nonce)
    with pytest.raises(NonceInvalid, match="already used"):
        store.begin_attestation(s, s.nonce)
    t = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    with pytest.raises(NonceInvalid, match="not the nonce"):
        store.begin_attestation(t, s.nonce)
    with pytest.raises(NonceInvalid, match="already used"):
        store.begin_attestation(t, t.nonce)  # the wrong guess used it up


def test_kbs_session_expires_and_is_swept() -> None:
    clock = Clock()
    store = SessionStore(timeout_s=300, clock=clock)
    s = store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    clock.now += 299
    assert store.get(s.id) is s
    clock.now += 2
    assert store.peek(s.id) is s  # still visible for the audit event of the refusal
    with pytest.raises(SessionMissing, match="expired"):
        store.get(s.id)
    with pytest.raises(SessionMissing):
        store.get(None)
    store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    clock.now += 301
    assert store.sweep() == 1 and len(store) == 0


def test_kbs_session_count_is_bounded() -> None:
    store = SessionStore(max_sessions=2)
    for _ in range(2):
        store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
    with pytest.raises(SessionMissing, match="too many"):
        store.create("snp", workload_id=None, node_id=None, hash_alg="sha384")
