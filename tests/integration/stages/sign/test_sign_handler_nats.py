"""Build and sign stages on a real nats-server: submitted → built; verified build-runner attestation → signed."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.artifacts import ArtifactRef, fetch_layout
from ccpipe.pipeline.servers import EmbeddedNats
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.events import Built, EventType, Signed
from ccpipe.stages.build.config import load_build_config
from ccpipe.stages.build.handler import build_stages
from ccpipe.stages.sign import decrypt_image, verify_image
from ccpipe.stages.sign.config import load_sign_config
from ccpipe.stages.sign.handler import sign_stages
from ccpipe.stages.sign.recipients import ImageKey
from tests.genuine_events import genuine_publisher
from tests.unit.stages.sign.sign_stage_helpers import (
    KBS_URL,
    RecordingKbs,
    commit_repo,
    event,
    submitted,
    verified_for,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_submitted_to_signed_through_the_trail(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", max_deliver=2, retry_attempts=1)
    repo = tmp_path / "repo"
    commit = commit_repo(repo)

    kbs = RecordingKbs()
    eps = Endpoints(nats_url=nats_server.url, kbs_url=KBS_URL, registry="127.0.0.1:5000")
    specs = [
        *build_stages(settings, eps, load_build_config(), select_backend=select_backend),
        *sign_stages(settings, eps, config=load_sign_config(register_measurement=False), registrar=kbs),
    ]
    async with run_stages(nats_server.url, settings, specs, instance="t-sign"):
        pub = genuine_publisher(js, settings.data_dir)
        await pub.publish(submitted(workload_id, repo, commit))
        built_event = await wait_for(js, workload_id, EventType.BUILT)
        assert isinstance(built_event.payload, Built)
        # what the attestation service publishes once it verified the runner's evidence
        verified = event(workload_id, EventType.ATTESTATION_VERIFIED, verified_for(built_event.payload))
        await pub.publish(verified)
        signed_event = await wait_for(js, workload_id, EventType.SIGNED)

    signed = signed_event.payload
    assert isinstance(signed, Signed) and signed_event.causation_id == verified.id
    # the signed layout travels by digest, not as a path: fetch it as the push stage does
    ref = ArtifactRef.parse(signed.layout)
    assert ref is not None, signed.layout
    signed = signed.model_copy(update={"layout": str(await fetch_layout(js, ref, tmp_path / "fetched"))})
    assert signed.source_image_digest == built_event.payload.image_digest
    kek = kbs.resources[f"ccpipe/{workload_id}/image-key"]  # registered before signed was published
    back = decrypt_image(f"oci:{signed.layout}:hello", tmp_path / "back", [ImageKey(signed.key_resource, kek)])
    assert back.manifest_digest == signed.source_image_digest
    pubkey = kbs.resources[f"ccpipe/{workload_id}/cosign-pubkey"]
    verify_image(signed.layout, "hello", pubkey, identity="127.0.0.1:5000/ccpipe/hello")
