"""Fuzz: JWE documents as ccpipe reads them.

The node agent opens the KBS's resource answer (``KbsSession.decrypt``: a flattened JWE to its
session key) and the encrypted image's key-wrapping JWE (``recipients._jwe_decrypt``, ocicrypt's
``jwe`` annotation), both through :func:`ccpipe.crypto.jose.decrypt`. Whatever the document,
jose raises only :class:`JoseInvalid` leaves and each caller its own family.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.crypto import jose
from ccpipe.stages.attest.kbs.client import KbsSession
from ccpipe.stages.attest.kbs.errors import KbsClientError
from ccpipe.stages.sign.errors import DecryptionError
from ccpipe.stages.sign.recipients import _jwe_decrypt, parse_annotation_packet
from tests.fuzz.fuzz_helpers import (
    JSON_VALUES,
    TIMEOUT_S,
    deep_json_text,
    fuzz_settings,
    json_bytes_mutations,
    json_mutations,
    parses_or_refuses,
)

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(65537, 2048)
SECRET = b"\x01" * 32
FLATTENED_EC = jose.encrypt_flattened(SECRET, EC_KEY.public_key())
FLATTENED_RSA = jose.encrypt_flattened(SECRET, RSA_KEY.public_key(), rsa_alg=jose.RSA_OAEP)
GENERAL = jose.encrypt_general(SECRET, [EC_KEY.public_key(), RSA_KEY.public_key()], rsa_alg=jose.RSA_OAEP)
SEEDS: list[dict[str, Any]] = [FLATTENED_EC, FLATTENED_RSA, GENERAL]


@st.composite
def _protected_mutations(draw: st.DrawFn, seed: dict[str, Any]) -> dict[str, Any]:
    """The seed with its protected header decoded, mutated and re-encoded: reaches alg/enc/epk."""
    header = json.loads(jose.b64url_decode(seed["protected"]))
    text = draw(st.one_of(
        (json_mutations(header) | JSON_VALUES).map(json.dumps),
        st.sampled_from([deep_json_text(), deep_json_text(opener="{")]),
    ))
    return {**seed, "protected": jose.b64url(text.encode())}


DOCS = st.sampled_from(SEEDS).flatmap(lambda s: st.one_of(json_mutations(s), _protected_mutations(s)))


@fuzz_settings()
@given(DOCS, st.sampled_from([EC_KEY, RSA_KEY]))
def test_fuzz_jose_decrypt_opens_or_raises_jose_invalid(doc: Any, key: jose.PrivateKey) -> None:
    parses_or_refuses(lambda d: jose.decrypt(d, key), doc, jose.JoseInvalid)


SESSION = KbsSession("http://127.0.0.1:9", backend=None, workload_id="w", tee="snp")  # type: ignore[arg-type]
SESSION_JWE = jose.encrypt_flattened(SECRET, jose.import_public_jwk(SESSION.tee_pubkey))


@fuzz_settings()
@given(json_bytes_mutations(SESSION_JWE))
def test_fuzz_kbs_resource_answer_decrypts_or_raises_kbs_client_error(data: bytes) -> None:
    parses_or_refuses(SESSION.decrypt, data, KbsClientError)


@fuzz_settings()
@given(st.sampled_from(SEEDS).flatmap(json_bytes_mutations), st.sampled_from([EC_KEY, RSA_KEY]))
def test_fuzz_image_key_jwe_decrypts_or_raises_decryption_error(blob: bytes, key: jose.PrivateKey) -> None:
    parses_or_refuses(lambda b: _jwe_decrypt(b, key), blob, DecryptionError)


PACKET = {"kid": "kbs:///default/key/1", "wrapped_data": "AAAA", "iv": "AAAA", "wrap_type": "A256GCM"}


@fuzz_settings()
@given(json_bytes_mutations(PACKET))
def test_fuzz_key_provider_annotation_parses_or_raises_decryption_error(data: bytes) -> None:
    parses_or_refuses(parse_annotation_packet, data, DecryptionError)
