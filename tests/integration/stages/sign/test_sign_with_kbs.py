"""The whole front of the flow on real servers: build → attest → sign with the embedded KBS.

A push becomes ``built`` (emulated SEV-SNP build runner), the attest stage verifies the runner's
evidence (``attestation.verified``, purpose build-runner), and the sign stage registers the
image key, the cosign public key and the reference values with the real KBS before ``signed``.
What the KBS then holds is read back from its store and used: the key decrypts the image, the
public key verifies its signature, the reference values name the signed image.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.artifacts import ArtifactRef, fetch_layout
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.events import EventType, Failed, Signed
from ccpipe.stages.attest.handler import attest_stages
from ccpipe.stages.attest.kbs.admin_auth import ensure_admin_keypair
from ccpipe.stages.attest.kbs.service import serve_kbs
from ccpipe.stages.attest.kbs.store import FileKek, ResourceStore
from ccpipe.stages.attest.kbs.store_nats import NatsKvBackend
from ccpipe.stages.attest.rvps import FileReferenceValueStore
from ccpipe.stages.build.config import load_build_config
from ccpipe.stages.build.handler import build_stages
from ccpipe.stages.sign import decrypt_image, verify_attestation, verify_image
from ccpipe.stages.sign.config import load_sign_config
from ccpipe.stages.sign.handler import sign_stages
from ccpipe.stages.sign.recipients import ImageKey
from ccpipe.stages.sign.workload import initdata_path
from tests.genuine_events import genuine_publisher
from tests.unit.stages.sign.sign_stage_helpers import (
    commit_repo,
    event,
    first_event,
    make_built,
    submitted,
    verified_for,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_push_to_signed_with_the_real_kbs(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data, max_deliver=3, retry_attempts=2, allow_emulated=True)
    commit = commit_repo(tmp_path / "repo")
    async with serve_kbs(settings, Endpoints(nats_url=nats_server.url, registry="127.0.0.1:5000")) as eps:
        assert eps.kbs_url is not None
        specs = [
            *build_stages(settings, eps, load_build_config(), select_backend=select_backend),
            *attest_stages(settings, eps),
            *sign_stages(settings, eps, config=load_sign_config()),
        ]
        async with run_stages(nats_server.url, settings, specs, instance="t-chain"):
            await genuine_publisher(js, data).publish(submitted(workload_id, tmp_path / "repo", commit))
            signed_event = await wait_for(js, workload_id, EventType.SIGNED)

    signed = signed_event.payload
    assert isinstance(signed, Signed)
    # the signed layout travels by digest, not as a path: fetch it as the push stage does
    ref = ArtifactRef.parse(signed.layout)
    assert ref is not None, signed.layout
    signed = signed.model_copy(update={"layout": str(await fetch_layout(js, ref, tmp_path / "fetched"))})
    verified = await wait_for(js, workload_id, EventType.ATTESTATION_VERIFIED)
    assert signed_event.causation_id == verified.id

    # the key the KBS holds (encrypted at rest) opens the image
    store = ResourceStore(await NatsKvBackend.open(js), FileKek.for_data_dir(data))
    kek = await store.get(f"ccpipe/{workload_id}/image-key")
    assert kek is not None and len(kek) == 32
    back = decrypt_image(f"oci:{signed.layout}:hello", tmp_path / "back", [ImageKey(signed.key_resource, kek)])
    assert back.manifest_digest == signed.source_image_digest
    # ... and it is in no event of the trail, in any encoding
    trail = b"".join(stored.data for stored in await read_events(js, workload_id))
    for form in (kek, kek.hex().encode(), base64.b64encode(kek), base64.urlsafe_b64encode(kek).rstrip(b"=")):
        assert form not in trail
    # the cosign key the KBS gives guests verifies the signature and the provenance attestation
    pubkey = await store.get(f"ccpipe/{workload_id}/cosign-pubkey")
    assert pubkey is not None
    verify_image(signed.layout, "hello", pubkey, identity="127.0.0.1:5000/ccpipe/hello")
    statement = verify_attestation(signed.layout, "hello", pubkey).document
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    # reference values for this workload only: the signed image, its initdata, the launch measurement
    values = FileReferenceValueStore(data / "attest" / "reference-values").values_for(workload_id)
    assert values["image_digest"] == [signed.image_digest]
    initdata = initdata_path(data, workload_id).read_bytes()
    assert values["init_data_digest"] == [signed.initdata_digest] == [hashlib.sha256(initdata).hexdigest()]
    assert len(str(values["snp_launch_measurement"][0])) == 96
    other = FileReferenceValueStore(data / "attest" / "reference-values").values_for("another-workload")
    assert signed.image_digest not in other.get("image_digest", [])


async def test_unreachable_kbs_is_retried_then_fails_without_signed(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data, max_deliver=2, retry_attempts=2, ack_wait_s=5.0)
    ensure_admin_keypair(data)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    eps = Endpoints(nats_url=nats_server.url, kbs_url=dead, registry="127.0.0.1:5000")
    built = make_built(tmp_path, data, workload_id)
    specs = sign_stages(settings, eps, config=load_sign_config(register_measurement=False))
    async with run_stages(nats_server.url, settings, specs, instance="t-nokbs", nak_base_delay_s=0.05):
        pub = genuine_publisher(js, data)
        await pub.publish(submitted(workload_id, tmp_path / "repo", "c" * 40))
        await pub.publish(event(workload_id, EventType.BUILT, built))
        await pub.publish(event(workload_id, EventType.ATTESTATION_VERIFIED, verified_for(built)))
        failed = await first_event(js, workload_id, {EventType.FAILED, EventType.SIGNED})
    assert isinstance(failed.payload, Failed), failed.payload
    reason = failed.payload.reason
    assert reason.stage == "sign" and reason.code == "kbs.client.unavailable"
    assert dead in reason.message and "gave up after 2 deliveries" in reason.message
    assert failed.payload.attempts == 2
