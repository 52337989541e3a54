"""report_data binding: JCS + SHA-384 over nonce, tee-pubkey and additional-evidence."""

from __future__ import annotations

import hashlib

import rfc8785

from ccpipe.stages.attest.kbs.binding import runtime_data, runtime_data_digest


def test_kbs_binding_jcs_vector_from_trustee() -> None:
    # The AS unit-test vector quoted in the reference notes.
    digest = hashlib.sha384(rfc8785.dumps({"b": 1, "a": "test", "c": {"d": "e"}})).hexdigest()
    assert digest == ("e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
                      "4597480a186427c813ca941da78870c3")


def test_kbs_binding_covers_nonce_key_and_devices() -> None:
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "BB"}
    base = runtime_data_digest("nonce-1", jwk)
    expected = hashlib.sha384(
        b'{"additional-evidence":"","nonce":"nonce-1","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256",'
        b'"kty":"EC","x":"AA","y":"BB"}}'
    ).digest()
    assert base == expected and len(base) == 48
    assert runtime_data_digest("nonce-2", jwk) != base
    assert runtime_data_digest("nonce-1", {**jwk, "x": "AB"}) != base
    assert runtime_data_digest("nonce-1", jwk, '{"gpu":1}') != base
    assert "additional-evidence" in runtime_data("n", jwk)  # always present, even when empty
    assert len(runtime_data_digest("nonce-1", jwk, hash_alg="sha512")) == 64
