"""The ``push`` step against a real nats-server and docker-registry: signed → pushed.

The input is made the way the sign stage makes it: an image encrypted for a KBS key, signed
and attested cosign-style in an OCI layout.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import JetStreamContext

from ccpipe.oci.documents import MEDIA_TYPE_LAYER_GZIP
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry import RegistryClient, pull_to_layout
from ccpipe.pipeline.artifacts import ARTIFACT_MISSING, ArtifactError, artifact_ref, get_artifact, store_layout
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry, free_port
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import EventType, Failed, Pushed, Signed, Submitted
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.deploy.handler import deploy_stages
from ccpipe.stages.sign import attest_image, encrypt_image_for_kbs, sign_image, verify_image
from ccpipe.stages.sign.keys import public_key_pem
from tests.genuine_events import genuine_publisher

pytestmark = pytest.mark.integration


def signed_layout(tmp: Path, identity: str) -> tuple[Signed, ec.EllipticCurvePrivateKey]:
    """An encrypted, signed and attested image in an OCI layout, and the ``signed`` payload for it."""
    src = OciLayout.create(tmp / "built")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = b"#!/bin/sh\necho hi\n" * 5000
        info = tarfile.TarInfo("app/hello.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = src.write_blob(gzip.compress(raw.getvalue(), mtime=0), MEDIA_TYPE_LAYER_GZIP)
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    built = src.write_image(config, [layer], tag="hello")
    enc, _key = encrypt_image_for_kbs(f"{tmp / 'built'}:hello", f"{tmp / 'signed'}:hello", "kbs:///default/image-key/t")
    key = ec.generate_private_key(ec.SECP256R1())
    sig = sign_image(tmp / "signed", "hello", key, identity=identity)
    attest_image(tmp / "signed", "hello", key, predicate_type="https://slsa.dev/provenance/v1",
                 predicate={"buildDefinition": {}}, identity=identity)
    return Signed(
        image_digest=enc.manifest_digest, source_image_digest=built.digest, layout=str(tmp / "signed"),
        key_resource="kbs:///default/image-key/t", signature_digest=sig.manifest_digest, initdata_digest="ab" * 32,
    ), key


async def publish_inputs(js: JetStreamContext, wl: str, signed: Signed, name: str = "hello") -> None:
    spec = WorkloadSpec.model_validate({"workload": {"name": name}, "tee": {"types": ["snp"]}})
    pub = genuine_publisher(js)
    await pub.publish(Event(type=EventType.SUBMITTED, workload_id=wl, source=Source(component="test"),
                            payload=Submitted(repo="/r", ref="refs/heads/main", old_commit="0" * 40,
                                              new_commit="1" * 40, pusher="t", spec=spec)))
    await pub.publish(Event(type=EventType.SIGNED, workload_id=wl, source=Source(component="test"), payload=signed))


async def first_of(js: JetStreamContext, wl: str, types: Sequence[EventType], timeout: float = 60.0) -> Event:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for s in await read_events(js, wl):
            if s.event and s.event.type in types:
                return s.event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {[t.value for t in types]} for {wl}")


def push_only(url: str, registry: str, **kw: Any) -> tuple[Any, list[Any]]:
    settings = load_settings(nats_url=url, max_deliver=kw.pop("max_deliver", 3), ack_wait_s=10.0,
                             retry_attempts=kw.pop("retry_attempts", 2))
    eps = Endpoints(nats_url=url, registry=registry)
    return settings, [s for s in deploy_stages(settings, eps) if s.name == "push"]


async def test_signed_image_signature_and_attestation_are_pushed(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, js: JetStreamContext, workload_id: str,
    tmp_path: Path,
) -> None:
    repo = "ccpipe/hello"
    signed, key = signed_layout(tmp_path, f"{registry_server.address}/{repo}")
    settings, specs = push_only(nats_server.url, registry_server.address)
    async with run_stages(nats_server.url, settings, specs, instance="test"):
        await publish_inputs(js, workload_id, signed)
        out = await first_of(js, workload_id, (EventType.PUSHED, EventType.FAILED))
    assert out.type == EventType.PUSHED, out.payload
    pushed = out.payload
    assert isinstance(pushed, Pushed)
    assert pushed.repository == repo and pushed.image_digest == signed.image_digest
    assert pushed.reference == f"docker://{registry_server.address}/{repo}@{signed.image_digest}"
    assert out.subject.image_digest == signed.image_digest
    async with RegistryClient(registry_server.address, plain_http=True) as client:
        assert await client.manifest_digest(repo, workload_id) == signed.image_digest  # tag = workload id
        stem = "sha256-" + signed.image_digest.split(":")[1]
        assert await client.manifest_digest(repo, stem + ".sig") == signed.signature_digest
        assert await client.manifest_digest(repo, stem + ".att") is not None
        await pull_to_layout(client, repo, signed.image_digest, tmp_path / "pulled", ref_name="hello")
    # what came back is byte-identical and its cosign signature verifies with the signer's key
    src, back = OciLayout.open(tmp_path / "signed"), OciLayout.open(tmp_path / "pulled")
    manifest = src.read_manifest(src.resolve("hello"))
    for desc in [manifest.config, *manifest.layers]:
        assert back.read_blob(desc.digest) == src.read_blob(desc.digest)
    pem = tmp_path / "cosign.pub"
    pem.write_bytes(public_key_pem(key))
    verify_image(tmp_path / "pulled", "hello", pem)


async def test_a_signature_that_is_not_the_recorded_one_fails_and_pushes_nothing(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, js: JetStreamContext, workload_id: str,
    tmp_path: Path,
) -> None:
    signed, _ = signed_layout(tmp_path, "x/ccpipe/other")
    forged = signed.model_copy(update={"signature_digest": "sha256:" + "00" * 32})
    settings, specs = push_only(nats_server.url, registry_server.address)
    async with run_stages(nats_server.url, settings, specs, instance="test"):
        await publish_inputs(js, workload_id, forged, name="other")
        out = await first_of(js, workload_id, (EventType.PUSHED, EventType.FAILED))
    assert out.type == EventType.FAILED and isinstance(out.payload, Failed)
    assert out.payload.reason.code == "deploy.push.signature_missing" and out.payload.attempts == 1
    async with RegistryClient(registry_server.address, plain_http=True) as client:
        assert await client.manifest_digest("ccpipe/other", signed.image_digest) is None


async def test_registry_down_is_retried_until_it_comes_up(
    nats_server: EmbeddedNats, js: JetStreamContext, workload_id: str, tmp_path: Path,
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    signed, _ = signed_layout(tmp_path, f"{address}/ccpipe/late")
    settings, specs = push_only(nats_server.url, address, max_deliver=10, retry_attempts=1)
    registry = EmbeddedRegistry(tmp_path / "late-registry", port=port)
    try:
        async with run_stages(nats_server.url, settings, specs, instance="test", nak_base_delay_s=0.2) as rt:
            await publish_inputs(js, workload_id, signed, name="late")
            for _ in range(300):  # the first delivery finds no registry and is handed back for a retry
                if rt.stats.get("retried", 0) >= 1:
                    break
                await asyncio.sleep(0.1)
            assert rt.stats.get("retried", 0) >= 1
            await asyncio.to_thread(registry.start)
            out = await first_of(js, workload_id, (EventType.PUSHED, EventType.FAILED))
        assert out.type == EventType.PUSHED, out.payload
        async with RegistryClient(address, plain_http=True) as client:
            assert await client.manifest_digest("ccpipe/late", signed.image_digest) == signed.image_digest
    finally:
        registry.stop()


async def _outputs(js: JetStreamContext, wl: str, count: int, timeout: float = 60.0) -> list[Event]:
    """The first ``count`` pushed/failed events of ``wl`` (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = [s.event for s in await read_events(js, wl)
                 if s.event and s.event.type in (EventType.PUSHED, EventType.FAILED)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {count} pushed/failed events for {wl}")


async def test_the_signed_layout_is_purged_once_pushed_and_a_replayed_input_finishes_from_the_registry(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, js: JetStreamContext, workload_id: str,
    tmp_path: Path,
) -> None:
    repo = "ccpipe/purged"
    signed, _ = signed_layout(tmp_path, f"{registry_server.address}/{repo}")
    ref = await store_layout(js, workload_id, "signed", Path(signed.layout))
    by_digest = signed.model_copy(update={"layout": str(ref)})
    settings, specs = push_only(nats_server.url, registry_server.address)
    async with run_stages(nats_server.url, settings, specs, instance="test"):
        await publish_inputs(js, workload_id, by_digest, name="purged")
        first = (await _outputs(js, workload_id, 1))[0]
        assert first.type == EventType.PUSHED, first.payload
        # megabytes of ciphertext per workload: gone from the store once the registry holds the push
        with pytest.raises(ArtifactError) as gone:
            await get_artifact(js, ref)
        assert gone.value.code == ARTIFACT_MISSING
        # the same input again (as a redelivery after a push killed once it had purged): finished from
        # what the registry holds, not failed for the missing layout
        await genuine_publisher(js).publish(
            Event(type=EventType.SIGNED, workload_id=workload_id, source=Source(component="test"), payload=by_digest))
        second = (await _outputs(js, workload_id, 2))[1]
    assert second.type == EventType.PUSHED, second.payload
    assert second.payload == first.payload


async def test_a_missing_layout_whose_image_is_not_in_the_registry_fails_the_workload(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, js: JetStreamContext, workload_id: str,
    tmp_path: Path,
) -> None:
    signed, _ = signed_layout(tmp_path, f"{registry_server.address}/ccpipe/never")
    never_stored = artifact_ref(workload_id, "signed", b"never stored")
    settings, specs = push_only(nats_server.url, registry_server.address)
    async with run_stages(nats_server.url, settings, specs, instance="test"):
        await publish_inputs(js, workload_id, signed.model_copy(update={"layout": str(never_stored)}), name="never")
        out = (await _outputs(js, workload_id, 1))[0]
    assert out.type == EventType.FAILED and isinstance(out.payload, Failed)
    assert out.payload.reason.code == ARTIFACT_MISSING
