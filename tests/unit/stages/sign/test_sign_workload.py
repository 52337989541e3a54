"""The sign stage's core for one workload: encrypt for the KBS, sign, attest, register — checked end to end."""

from __future__ import annotations

import base64
import hashlib
import tomllib
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.events import Built
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.sign import decrypt_image, verify_attestation, verify_image
from ccpipe.stages.sign.errors import NoDecryptionKey, SignatureInvalid
from ccpipe.stages.sign.keys import generate_keys, load_or_create_keys, load_private_key
from ccpipe.stages.sign.recipients import ImageKey
from ccpipe.stages.sign.workload import SignContext, binds_provenance, initdata_path, sign_workload
from tests.unit.stages.sign.sign_stage_helpers import KBS_URL, RecordingKbs, make_built, verified_for

WL = "wl-sign-1"
TEE = TeeRequirements(types=[TeeType.TDX], allow_emulated=False, min_tcb={"tdx_module": 3})


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Path]:
    root = tmp_path_factory.mktemp("signwl")
    data = root / "data"
    return make_built(root, data, WL), data


@pytest.fixture
def signed_run(built_image: tuple[Built, Path]):  # type: ignore[no-untyped-def]
    built, data = built_image
    key, pub = load_or_create_keys(data / "keys" / "sign" / "cosign", "pw")
    kbs = RecordingKbs()
    ctx = SignContext(data_dir=data, kbs_url=KBS_URL, signer=key, public_key_pem=pub, registry="127.0.0.1:5000",
                      launch_values={"snp_launch_measurement": ["ab" * 48]})  # fmt: skip
    return built, data, kbs, ctx


async def test_signed_image_decrypts_with_the_registered_key_only(signed_run) -> None:  # type: ignore[no-untyped-def]
    built, data, kbs, ctx = signed_run
    signed = await sign_workload(built, WL, TEE, ctx, kbs)

    assert signed.source_image_digest == built.image_digest and signed.image_digest != built.image_digest
    assert signed.key_resource == f"kbs:///ccpipe/{WL}/image-key"
    assert Path(signed.layout) == data / "images" / WL / "signed"
    kek = kbs.resources[f"ccpipe/{WL}/image-key"]
    assert len(kek) == 32
    # the KBS-held key opens the image, and the plaintext is exactly what the build made
    back = decrypt_image(f"oci:{signed.layout}:hello", data / "roundtrip", [ImageKey(signed.key_resource, kek)])
    assert back.manifest_digest == built.image_digest
    # another key for the same resource does not
    with pytest.raises(NoDecryptionKey):
        decrypt_image(f"oci:{signed.layout}:hello", data / "nope", [ImageKey.generate(signed.key_resource)])
    # the key is in no file and no event field
    assert kek.hex() not in signed.model_dump_json() and base64.b64encode(kek).decode() not in signed.model_dump_json()
    for path in data.rglob("*"):
        if path.is_file():
            assert kek not in path.read_bytes(), path


async def test_signature_and_provenance_verify_with_the_registered_pubkey(signed_run) -> None:  # type: ignore[no-untyped-def]
    built, data, kbs, ctx = signed_run
    signed = await sign_workload(built, WL, TEE, ctx, kbs)
    pub = kbs.resources[f"ccpipe/{WL}/cosign-pubkey"]
    doc = verify_image(signed.layout, "hello", pub, identity="127.0.0.1:5000/ccpipe/hello")
    assert doc["critical"]["image"]["docker-manifest-digest"] == signed.image_digest
    lay = OciLayout.open(Path(signed.layout))
    assert (
        lay.resolve("sha256-" + signed.image_digest.removeprefix("sha256:") + ".sig").digest == signed.signature_digest
    )
    statement = verify_attestation(
        signed.layout, "hello", pub, predicate_type="https://slsa.dev/provenance/v1"
    ).document
    assert statement["predicate"] == built.provenance["predicate"]
    assert statement["subject"][0]["digest"]["sha256"] == signed.image_digest.removeprefix("sha256:")
    # a key the KBS does not hold is refused
    other, _ = generate_keys(data / "other", None)
    with pytest.raises(SignatureInvalid):
        verify_image(signed.layout, "hello", load_private_key(other).public_key())


async def test_reference_values_and_initdata_name_the_signed_image(signed_run) -> None:  # type: ignore[no-untyped-def]
    built, data, kbs, ctx = signed_run
    signed = await sign_workload(built, WL, TEE, ctx, kbs)
    # the TEE requirements before the key they guard, the key and the trust anchor before the
    # reference values; all before returning
    assert kbs.calls == [f"resource:ccpipe/{WL}/tee-requirements", f"resource:ccpipe/{WL}/image-key",
                         f"resource:ccpipe/{WL}/cosign-pubkey", "reference-values"]
    assert TeeRequirements.model_validate_json(kbs.resources[f"ccpipe/{WL}/tee-requirements"]) == TEE
    values = kbs.reference_values()
    assert values[f"scope/{WL}/image_digest"] == [signed.image_digest]
    assert values[f"scope/{WL}/snp_launch_measurement"] == ["ab" * 48]
    text = initdata_path(data, WL).read_text()
    assert signed.initdata == text  # the runner launches with exactly these bytes
    assert values[f"scope/{WL}/init_data_digest"] == [signed.initdata_digest]
    assert hashlib.sha256(text.encode()).hexdigest() == signed.initdata_digest
    doc = tomllib.loads(text)
    assert tomllib.loads(doc["data"]["ccpipe.toml"])["workload"]["image_digest"] == signed.image_digest
    cdh = tomllib.loads(doc["data"]["cdh.toml"])
    assert cdh["kbc"]["url"] == KBS_URL
    assert f"kbs:///ccpipe/{WL}/cosign-pubkey" in cdh["image"]["image_security_policy"]


async def test_each_attempt_uses_a_fresh_key(signed_run) -> None:  # type: ignore[no-untyped-def]
    built, _, kbs, ctx = signed_run
    first = await sign_workload(built, WL, TEE, ctx, kbs)
    key1 = kbs.resources[f"ccpipe/{WL}/image-key"]
    second = await sign_workload(built, WL, TEE, ctx, kbs)
    assert kbs.resources[f"ccpipe/{WL}/image-key"] != key1
    assert first.image_digest != second.image_digest  # fresh layer keys and IVs too


def test_binding_refuses_another_builds_evidence(built_image: tuple[Built, Path]) -> None:
    built, _ = built_image
    good, bad = verified_for(built), verified_for(built, bound=False)
    assert binds_provenance(built, good.claims, good.evidence_digest)
    assert binds_provenance(built, good.claims, None)  # report_data alone suffices
    assert not binds_provenance(built, bad.claims, bad.evidence_digest)
