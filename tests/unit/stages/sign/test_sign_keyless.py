"""Keyless Sigstore signing and verification against a private deployment on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccpipe.oci.cosign_names import ANNOTATION_CERTIFICATE, ANNOTATION_REKOR_BUNDLE, signature_tag
from ccpipe.oci.layout import OciLayout
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.schemas.events import EventType, Signed
from ccpipe.stages.sign import (
    attest_image,
    generate_keys,
    load_private_key,
    sign_image,
    verify_attestation,
    verify_image,
)
from ccpipe.stages.sign.config import load_sign_config
from ccpipe.stages.sign.errors import SignatureInvalid, SignatureMissing
from ccpipe.stages.sign.handler import sign_stages
from ccpipe.stages.sign.keyless import (
    KeylessUnavailable,
    SigstoreSigner,
    keyless_signer,
    load_trust_config,
    verify_image_keyless,
)
from ccpipe.stages.sign.workload import initdata_path
from tests.unit.stages.sign.private_sigstore import ISSUER, PrivateSigstore
from tests.unit.stages.sign.sign_stage_helpers import (
    KBS_URL,
    MemoryMarkers,
    RecordingKbs,
    event,
    make_built,
    submitted,
    verified_for,
)

EMAIL = "builder@pipeline.private.test"


@pytest.fixture(scope="module")
def sigstore() -> Iterator[PrivateSigstore]:
    with PrivateSigstore() as deployment:
        yield deployment


@pytest.fixture
def signed(sigstore: PrivateSigstore, image: Callable[..., Path]) -> Path:
    layout = image()
    signer = SigstoreSigner(load_trust_config(sigstore.trust_config()), sigstore.token(EMAIL))
    sign_image(layout, "t", signer, identity="reg/ccpipe/app")
    return layout


def sig_layer(layout: Path) -> tuple[dict[str, str], bytes]:
    """The annotations and payload of the image's (first) signature layer."""
    lay = OciLayout.open(layout)
    layer = lay.read_manifest(lay.resolve(signature_tag(lay.resolve("t").digest))).layers[0]
    return dict(layer.annotations or {}), lay.read_blob(layer.digest)


def test_keyless_signature_verifies_offline_for_its_identity(image: Callable[..., Path]) -> None:
    layout = image()
    with PrivateSigstore() as deployment:
        trust = load_trust_config(deployment.trust_config())
        sign_image(layout, "t", SigstoreSigner(trust, deployment.token(EMAIL)), identity="reg/ccpipe/app")
    # the CA and the log are gone: verification needs neither
    doc = verify_image_keyless(layout, "t", trust, cert_identity=EMAIL, cert_oidc_issuer=ISSUER,
                               identity="reg/ccpipe/app")  # fmt: skip
    assert doc["critical"]["image"]["docker-manifest-digest"] == OciLayout.open(layout).resolve("t").digest


def test_cosign_annotations_carry_certificate_and_log_promise(sigstore: PrivateSigstore, signed: Path) -> None:
    ann, payload = sig_layer(signed)
    cert = x509.load_pem_x509_certificate(ann[ANNOTATION_CERTIFICATE].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == [EMAIL]
    # the signature is a plain ECDSA signature by the certificate's key: cosign-format verifiers check it so
    pem = cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verify_image(signed, "t", pem)
    # the SET is the log's signature over the entry it promises to include, which names this payload
    rekor = json.loads(ann[ANNOTATION_REKOR_BUNDLE])
    sigstore.log_key.public_key().verify(
        base64.b64decode(rekor["SignedEntryTimestamp"]), rfc8785.dumps(rekor["Payload"]), ec.ECDSA(hashes.SHA256())
    )
    body = json.loads(base64.b64decode(rekor["Payload"]["body"]))
    assert body["spec"]["data"]["hash"]["value"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize(
    ("who", "issuer"),
    [("mallory@evil.test", ISSUER), (EMAIL, "https://accounts.example.com")],
    ids=["other-identity", "other-issuer"],
)
def test_other_identity_or_issuer_is_refused(sigstore: PrivateSigstore, signed: Path, who: str, issuer: str) -> None:
    trust = load_trust_config(sigstore.trust_config())
    with pytest.raises(SignatureInvalid, match="verifies keylessly"):
        verify_image_keyless(signed, "t", trust, cert_identity=who, cert_oidc_issuer=issuer)


def test_another_trust_root_is_refused(signed: Path) -> None:
    with PrivateSigstore() as other:
        trust = load_trust_config(other.trust_config())
    with pytest.raises(SignatureInvalid, match="Sigstore verification failed"):
        verify_image_keyless(signed, "t", trust, cert_identity=EMAIL, cert_oidc_issuer=ISSUER)


def test_tampered_payload_is_refused(sigstore: PrivateSigstore, signed: Path) -> None:
    lay = OciLayout.open(signed)
    layer = lay.read_manifest(lay.resolve(signature_tag(lay.resolve("t").digest))).layers[0]
    blob = lay.blob_path(layer.digest)
    blob.write_bytes(blob.read_bytes().replace(b"reg/ccpipe/app", b"reg/ccpipe/evil"))
    with pytest.raises(SignatureInvalid):
        verify_image_keyless(signed, "t", load_trust_config(sigstore.trust_config()), cert_identity=EMAIL,
                             cert_oidc_issuer=ISSUER)  # fmt: skip


def test_key_signed_image_is_not_keyless(sigstore: PrivateSigstore, image: Callable[..., Path], tmp_path: Path) -> None:
    layout = image()
    key, _ = generate_keys(tmp_path / "k", None)
    sign_image(layout, "t", load_private_key(key))
    with pytest.raises(SignatureInvalid, match="no Sigstore bundle"):
        verify_image_keyless(layout, "t", load_trust_config(sigstore.trust_config()), cert_identity=EMAIL,
                             cert_oidc_issuer=ISSUER)  # fmt: skip
    with pytest.raises(SignatureMissing):
        verify_image_keyless(image(name="unsigned"), "t", load_trust_config(sigstore.trust_config()),
                             cert_identity=EMAIL, cert_oidc_issuer=ISSUER)  # fmt: skip


def test_keyless_attestation_and_stage_configuration(sigstore: PrivateSigstore, image: Callable[..., Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    (tmp_path / "trust.json").write_text(json.dumps(sigstore.trust_config()))
    (tmp_path / "token").write_text(sigstore.token(EMAIL))
    config = load_sign_config(keyless=True, sigstore_trust_config=tmp_path / "trust.json",
                              sigstore_token_file=tmp_path / "token")  # fmt: skip
    signer, chain = keyless_signer(config, data_dir=tmp_path)
    assert b"BEGIN CERTIFICATE" in chain
    layout = image()
    attest_image(layout, "t", signer, predicate_type="https://slsa.dev/provenance/v1", predicate={"x": 1})
    ann = OciLayout.open(layout)
    att = ann.read_manifest(ann.resolve("sha256-" + ann.resolve("t").digest.removeprefix("sha256:") + ".att"))
    cert = x509.load_pem_x509_certificate((att.layers[0].annotations or {})[ANNOTATION_CERTIFICATE].encode())
    statement = verify_attestation(layout, "t", cert.public_key()).document  # type: ignore[arg-type]
    assert statement["predicate"] == {"x": 1}


def test_keyless_needs_its_configuration_and_a_reachable_ca(tmp_path: Path, sigstore: PrivateSigstore,
                                                            image: Callable[..., Path]) -> None:  # fmt: skip
    with pytest.raises(ConfigurationError, match="keyless signing needs"):
        load_sign_config(keyless=True)
    with pytest.raises(ConfigurationError, match="trust configuration"):
        load_trust_config(tmp_path / "missing.json")
    with PrivateSigstore() as gone:
        trust = load_trust_config(gone.trust_config())
        token = gone.token(EMAIL)
    with pytest.raises(KeylessUnavailable):
        sign_image(image(), "t", SigstoreSigner(trust, token))


async def test_sign_stage_in_keyless_mode(sigstore: PrivateSigstore, tmp_path: Path) -> None:
    wl = "wl-keyless"
    data = tmp_path / "data"
    built = make_built(tmp_path, data, wl)
    (tmp_path / "trust.json").write_text(json.dumps(sigstore.trust_config()))
    (tmp_path / "token").write_text(sigstore.token(EMAIL))
    config = load_sign_config(keyless=True, sigstore_trust_config=tmp_path / "trust.json",
                              sigstore_token_file=tmp_path / "token", register_measurement=False)  # fmt: skip
    kbs = RecordingKbs()
    eps = Endpoints(nats_url="nats://127.0.0.1:1", kbs_url=KBS_URL, registry="127.0.0.1:5000")

    async def lookup(workload_id: str, etype: EventType) -> Event:
        if etype == EventType.SUBMITTED:  # the spec whose [tee] requirements go to the KBS
            return submitted(wl, tmp_path / "repo", "c" * 40)
        if etype != EventType.BUILT:
            raise InvalidInput("none", code="event.missing")
        return event(wl, EventType.BUILT, built)

    (spec,) = sign_stages(load_settings(data_dir=data), eps, config=config, registrar=kbs, lookup=lookup,
                          markers=MemoryMarkers())
    (out,) = await spec.handler(event(wl, EventType.ATTESTATION_VERIFIED, verified_for(built)))
    signed = out.payload
    assert isinstance(signed, Signed)
    trust = load_trust_config(sigstore.trust_config())
    verify_image_keyless(signed.layout, "hello", trust, cert_identity=EMAIL, cert_oidc_issuer=ISSUER,
                         identity="127.0.0.1:5000/ccpipe/hello")  # fmt: skip
    assert not (data / "keys" / "sign").exists()  # no long-lived signing key was made
    # the guest's policy (in the initdata) names the CA, the issuer and the identity, not a key
    cdh = tomllib.loads(tomllib.loads(initdata_path(data, wl).read_text())["data"]["cdh.toml"])
    requirement = json.loads(cdh["image"]["image_security_policy"])["transports"]["docker"][
        "127.0.0.1:5000/ccpipe/hello"
    ][0]
    assert requirement["fulcio"]["subjectEmail"] == EMAIL and requirement["fulcio"]["oidcIssuer"] == ISSUER
    assert "keyPath" not in requirement and requirement["rekorPublicKeyData"]
