"""DSSE: the published v1.0.2 test vector, PAE, and rejections."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.stages.sign.dsse import (
    Envelope,
    Signature,
    pae,
    parse_statement,
    sign_envelope,
    statement,
    statement_covers,
    verify_envelope,
)
from ccpipe.stages.sign.errors import PayloadInvalid, SignatureInvalid


@pytest.fixture
def hello(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / "dsse" / "hello-world-vector.json").read_text())
    return data


def _pub(v: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    pk = v["publicKey"]
    return ec.EllipticCurvePublicNumbers(int(pk["x"]), int(pk["y"]), ec.SECP256R1()).public_key()


def test_pae_matches_the_vector(hello: dict[str, Any]) -> None:
    assert pae(hello["payloadType"], hello["serializedBody"].encode()) == hello["pae"].encode()
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("\u00e9", b"x") == "DSSEv1 2 \u00e9 1 x".encode()  # lengths are byte lengths


def test_vector_envelope_verifies(hello: dict[str, Any]) -> None:
    env = Envelope.from_json(hello["envelope"])
    assert verify_envelope(env, _pub(hello)) == (hello["payloadType"], b"hello world")


def test_keyid_is_only_a_hint(hello: dict[str, Any]) -> None:
    doc = dict(hello["envelope"])
    doc["signatures"] = [{**doc["signatures"][0], "keyid": "someone-else"}]
    assert verify_envelope(Envelope.from_json(doc), _pub(hello))[1] == b"hello world"


def test_resigning_with_the_vector_key_verifies(hello: dict[str, Any]) -> None:
    priv = ec.derive_private_key(int(hello["privateKeyD"]), ec.SECP256R1())
    env = sign_envelope(b"hello world", hello["payloadType"], priv, keyid=hello["keyid"])
    again = Envelope.from_json(env.to_json())
    assert again == env and verify_envelope(again, _pub(hello))[1] == b"hello world"


@pytest.mark.parametrize("field", ["payload", "payloadType"])
def test_modified_envelope_is_rejected(hello: dict[str, Any], field: str) -> None:
    doc = dict(hello["envelope"])
    doc[field] = base64.b64encode(b"hello world!").decode() if field == "payload" else "text/plain"
    with pytest.raises(SignatureInvalid):
        verify_envelope(Envelope.from_json(doc), _pub(hello))


def test_signature_over_raw_payload_is_not_accepted(hello: dict[str, Any]) -> None:
    priv = ec.derive_private_key(int(hello["privateKeyD"]), ec.SECP256R1())
    from ccpipe.stages.sign.keys import sign_bytes

    env = Envelope(b"hello world", hello["payloadType"], (Signature(sign_bytes(priv, b"hello world")),))
    with pytest.raises(SignatureInvalid):
        verify_envelope(env, _pub(hello))


def test_malformed_envelopes() -> None:
    for bad in (b"{}", b"not json", json.dumps({"payloadType": "t", "payload": "eA==", "signatures": []}).encode()):
        with pytest.raises(PayloadInvalid):
            Envelope.from_json(bad)


def test_statement_v1() -> None:
    body = statement([("reg/app", "sha256:" + "ab" * 32)], "https://slsa.dev/provenance/v1", {"buildDefinition": {}})
    doc = parse_statement(body)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["subject"] == [{"name": "reg/app", "digest": {"sha256": "ab" * 32}}]
    assert statement_covers(doc, "sha256:" + "ab" * 32) and not statement_covers(doc, "sha256:" + "cd" * 32)
    with pytest.raises(PayloadInvalid):
        parse_statement(json.dumps({"_type": "x"}).encode())
