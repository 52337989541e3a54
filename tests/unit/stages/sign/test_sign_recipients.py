"""KBS key-provider wrapping (CoCo AnnotationPacket) against the guest-components vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.stages.sign.errors import EncryptionMetadataInvalid, NoDecryptionKey, RecipientInvalid
from ccpipe.stages.sign.ocicrypt import PrivateOptions
from ccpipe.stages.sign.recipients import (
    ANNOTATION_ATTESTATION_AGENT,
    ANNOTATION_JWE,
    ImageKey,
    KbsRecipient,
    kbs_resource_uri,
    parse_annotation_packet,
    unwrap_annotation_packet,
    unwrap_private_options,
    wrap_private_options,
)

SAMPLE_KEK = bytes.fromhex("d99b7705b0ba7a168295b3a3367270b0dd9b371bf514ca8b9ba7f0a33711daea")


def _annotation(vectors_dir: Path, name: str) -> dict[str, str]:
    packet = (vectors_dir / "guest-components" / "image-enc" / name).read_bytes()
    return {ANNOTATION_ATTESTATION_AGENT: base64.b64encode(packet).decode()}


def test_sample_kbc_vector_unwraps_with_the_sample_key(vectors_dir: Path) -> None:
    opts = unwrap_private_options(
        _annotation(vectors_dir, "sample_kbc_annotation.json"), [ImageKey("kbs:///default/key/1", SAMPLE_KEK)]
    )
    # expected values from tests/vectors/guest-components/SOURCES.md
    assert base64.b64encode(opts.symkey).decode() == "1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs="
    assert opts.digest == "sha256:18be1897f9402f27c8c0eba7c86e0c00f5656db62961b5949d55f9565c42c6e7"
    assert base64.b64encode(opts.nonce).decode() == "r10F9oaCu+nWFXfod3l83g=="


def test_sample_vector_through_a_kbs_resolver(vectors_dir: Path) -> None:
    asked: list[str] = []

    def resolver(kid: str) -> bytes | None:
        asked.append(kid)
        return SAMPLE_KEK

    assert unwrap_private_options(_annotation(vectors_dir, "sample_kbc_annotation.json"), [resolver]).digest.startswith(
        "sha256:18be"
    )
    assert asked == ["kbs:///default/key/1"]


def test_sample_vector_refuses_another_key(vectors_dir: Path) -> None:
    with pytest.raises(NoDecryptionKey, match="kbs:///default/key/1"):
        unwrap_private_options(
            _annotation(vectors_dir, "sample_kbc_annotation.json"), [ImageKey("kbs:///default/key/1", bytes(32))]
        )


def test_cdh_v1_vector_parses_as_v2_and_does_not_open_with_the_sample_key(vectors_dir: Path) -> None:
    raw = (vectors_dir / "guest-components" / "image-enc" / "cdh_annotation_v1.json").read_bytes()
    packet = parse_annotation_packet(raw)
    assert packet["version"] == "0.1.0" and packet["provider"] == "kbs"
    assert unwrap_annotation_packet(packet, SAMPLE_KEK) is None


def test_kbs_wrap_writes_the_annotation_packet_and_round_trips() -> None:
    key = ImageKey.generate(kbs_resource_uri("default", "image-key", "hello-1"))
    opts = PrivateOptions(symkey=b"k" * 32, digest="sha256:" + "a" * 64, nonce=b"n" * 16)
    annotations = wrap_private_options(opts, [KbsRecipient(key)])
    assert set(annotations) == {ANNOTATION_ATTESTATION_AGENT}
    packet = json.loads(base64.b64decode(annotations[ANNOTATION_ATTESTATION_AGENT]))
    assert set(packet) == {"kid", "wrapped_data", "iv", "wrap_type"}
    assert packet["kid"] == "kbs:///default/image-key/hello-1" and packet["wrap_type"] == "A256GCM"
    assert len(base64.b64decode(packet["iv"])) == 12
    assert unwrap_private_options(annotations, [key]) == opts
    # a key registered under another kid is not even tried
    with pytest.raises(NoDecryptionKey):
        unwrap_private_options(annotations, [ImageKey("kbs:///default/image-key/other", key.kek)])


def test_two_kbs_keys_are_comma_separated() -> None:
    a, b = ImageKey.generate("kbs:///r/k/a"), ImageKey.generate("kbs:///r/k/b")
    opts = PrivateOptions(symkey=b"k" * 32, digest="sha256:" + "a" * 64, nonce=b"n" * 16)
    annotations = wrap_private_options(opts, [KbsRecipient(a), KbsRecipient(b)])
    assert annotations[ANNOTATION_ATTESTATION_AGENT].count(",") == 1
    assert unwrap_private_options(annotations, [b]) == opts


def test_image_keys_are_fresh_and_never_shown() -> None:
    a, b = ImageKey.generate("kbs:///r/k/t"), ImageKey.generate("kbs:///r/k/t")
    assert a.kek != b.kek and len(a.kek) == 32
    assert a.kek.hex() not in repr(a) and str(a.kek) not in repr(a)


@pytest.mark.parametrize("bad", ["kbs:///a/b", "kbs:///a/b/c/d", "http:///a/b/c", "kbs:///a/../c", "kbs:///a/b/c d"])
def test_resource_uris_are_checked(bad: str) -> None:
    with pytest.raises(RecipientInvalid):
        ImageKey.generate(bad)


def test_no_key_annotation_at_all_is_metadata_error() -> None:
    with pytest.raises(EncryptionMetadataInvalid):
        unwrap_private_options({"other": "x"}, [])
    with pytest.raises(EncryptionMetadataInvalid):
        unwrap_private_options({ANNOTATION_JWE: "%%%"}, [])


def test_annotations_nested_too_deeply_are_invalid_metadata() -> None:
    # Found by tests/fuzz: json's RecursionError escaped the JWE and the annotation readers.
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(EncryptionMetadataInvalid, match="not JSON"):
        parse_annotation_packet(deep)
    with pytest.raises(EncryptionMetadataInvalid, match="not JSON"):
        key = ec.generate_private_key(ec.SECP256R1())
        unwrap_private_options({ANNOTATION_JWE: base64.b64encode(deep).decode()}, [key])
