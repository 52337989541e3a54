"""The build stage against a real nats-server: submitted → built (attested), or one failed event."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.evidence.snp_evidence import snp_report_from_json
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry import RegistryClient, push_layout
from ccpipe.pipeline.artifacts import fetch_layout, layout_ref, load_or_create_sealing_key
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.servers import EmbeddedNats, EmbeddedRegistry
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.events import Built, EventType, Failed
from ccpipe.stages.attest.verifiers import Binding, VerifierConfig, verifier_for
from ccpipe.stages.attest.verifiers.emulated import emulated_roots_in
from ccpipe.stages.build.base.busybox import make_busybox_base
from ccpipe.stages.build.config import load_build_config
from ccpipe.stages.build.handler import build_stages
from ccpipe.stages.build.runner import demo_base_reference
from tests.genuine_events import genuine_publisher
from tests.unit.stages.build.build_helpers import SPEC, hello_files
from tests.unit.stages.sign.sign_stage_helpers import commit_repo, first_event, submitted

pytestmark = pytest.mark.integration


def stage_settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", max_deliver=2, retry_attempts=1, ack_wait_s=30.0)


async def run_one(nats_server: EmbeddedNats, js: JetStreamContext, settings: Settings, event: Event) -> Event:
    specs = build_stages(
        settings,
        Endpoints(nats_url=nats_server.url),
        load_build_config(tee_backend="emulated-snp"),
        select_backend=select_backend,
    )
    async with run_stages(nats_server.url, settings, specs, instance="t-build"):
        await genuine_publisher(js, settings.data_dir).publish(event)
        return await first_event(js, event.workload_id, {EventType.BUILT, EventType.FAILED})


async def handed_on_layout(js: JetStreamContext, settings: Settings, built: Built, into: Path) -> Path:
    """The layout a ``built`` event names, fetched and unsealed as the sign stage does."""
    ref = layout_ref(settings.data_dir, built.layout)
    assert ref is not None, f"built.layout is not a stored artifact: {built.layout}"
    return await fetch_layout(js, ref, into, load_or_create_sealing_key(settings.data_dir, "sign"))


async def test_submitted_commit_becomes_built_with_attested_provenance(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    settings = stage_settings(tmp_path)
    base = demo_base_reference(settings.data_dir / "bases")  # made by the stage on first use
    files = hello_files(base)
    repo = tmp_path / "repo"
    commit = commit_repo(repo, files)
    out = await run_one(nats_server, js, settings, submitted(workload_id, repo, commit, SPEC.format(base=base)))

    assert out.type == EventType.BUILT, out.payload
    built = out.payload
    assert isinstance(built, Built)
    assert out.subject.commit == commit and out.subject.image_digest == built.image_digest
    # the layout is handed on by digest, sealed to the sign stage; its local copy is gone
    assert not (settings.data_dir / "images" / workload_id / "plain").exists()
    layout = await handed_on_layout(js, settings, built, tmp_path / "fetched")
    assert OciLayout.open(layout).resolve("hello").digest == built.image_digest

    # the provenance names this commit and image; its SHA-384 is what the TEE report binds
    assert built.provenance["subject"][0]["digest"] == {"sha256": built.image_digest.removeprefix("sha256:")}
    params = built.provenance["predicate"]["buildDefinition"]["externalParameters"]
    assert params["commit"] == commit and params["ref"] == "refs/heads/main"
    digest = hashlib.sha384(canonical_json(built.provenance)).digest()
    assert built.provenance_digest == "sha384:" + digest.hex()
    evidence = built.runner_evidence
    assert (evidence.tee.value, evidence.emulated) == ("snp", True)
    raw = base64.b64decode(evidence.evidence)
    report = snp_report_from_json(json.loads(raw)["attestation_report"])
    assert report.report_data == digest.ljust(64, b"\0")

    # and the attestation service's verifier accepts it against the installation's emulated root
    roots = emulated_roots_in(settings.data_dir)
    config = VerifierConfig(allow_emulated=True, emulated_snp_roots_pem=roots.snp_roots_pem)
    claims = verifier_for("snp", config).verify(raw, Binding(report_data=digest))
    assert claims.emulated and claims.report_data == digest.ljust(64, b"\0").hex()


async def test_unreadable_ref_fails_once_with_a_reason(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    settings = stage_settings(tmp_path)
    repo = tmp_path / "repo"
    commit_repo(repo)
    missing = "ab" * 20  # a well-formed commit id that is not in the repository
    out = await run_one(nats_server, js, settings, submitted(workload_id, repo, missing, SPEC.format(base="scratch")))
    assert out.type == EventType.FAILED
    assert isinstance(out.payload, Failed)
    reason = out.payload.reason
    assert reason.stage == "build" and reason.code == "build.checkout"
    assert missing in reason.message and str(repo) in reason.message
    assert out.payload.attempts == 1  # final at once: not retried
    await asyncio.sleep(0.5)
    kinds = [s.event.type for s in await read_events(js, workload_id) if s.event]
    assert kinds.count(EventType.FAILED) == 1 and EventType.BUILT not in kinds


async def test_absolute_base_outside_the_bases_dir_is_refused(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path, workload_id: str
) -> None:
    settings = stage_settings(tmp_path)
    elsewhere = tmp_path / "other-tenant" / "layout"
    OciLayout.open_or_create(elsewhere)
    base = f"oci:{elsewhere}:x"
    repo = tmp_path / "repo"
    commit = commit_repo(repo, hello_files(base))
    out = await run_one(nats_server, js, settings, submitted(workload_id, repo, commit, SPEC.format(base=base)))
    assert out.type == EventType.FAILED
    assert isinstance(out.payload, Failed)
    assert out.payload.reason.code == "build.base.forbidden"


async def test_base_from_the_pipeline_registry_only(
    nats_server: EmbeddedNats, registry_server: EmbeddedRegistry, js: JetStreamContext, tmp_path: Path,
    workload_id: str,
) -> None:  # fmt: skip
    settings = stage_settings(tmp_path)
    bases = tmp_path / "base-src"
    make_busybox_base(bases, tag="busybox")
    async with RegistryClient(registry_server.address, plain_http=True) as client:
        digest = await push_layout(client, bases, f"bases/{workload_id}", "busybox")
    base = f"{registry_server.address}/bases/{workload_id}@{digest}"
    repo = tmp_path / "repo"
    commit = commit_repo(repo, hello_files(base))
    eps = Endpoints(nats_url=nats_server.url, registry=registry_server.address)
    specs = build_stages(settings, eps, load_build_config(), select_backend=select_backend)
    async with run_stages(nats_server.url, settings, specs, instance="t-build-reg"):
        pub = genuine_publisher(js, settings.data_dir)
        await pub.publish(submitted(workload_id, repo, commit, SPEC.format(base=base)))
        out = await first_event(js, workload_id, {EventType.BUILT, EventType.FAILED})
    assert out.type == EventType.BUILT, out.payload
    assert isinstance(out.payload, Built)
    deps = out.payload.provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {"name": "base", "uri": f"docker://{base}", "digest": {"sha256": digest.removeprefix("sha256:")},
            "mediaType": "application/vnd.oci.image.manifest.v1+json"} in deps  # fmt: skip
    plain = OciLayout.open(await handed_on_layout(js, settings, out.payload, tmp_path / "fetched"))
    base_layout = OciLayout.open(bases)
    base_layers = base_layout.read_manifest(base_layout.resolve("busybox")).layers
    image_layers = plain.read_manifest(plain.resolve("hello")).layers
    assert [d.digest for d in image_layers[: len(base_layers)]] == [d.digest for d in base_layers]

    # the same base named through another registry address is not fetched
    other_wl = workload_id + "-x"
    elsewhere = base.replace(registry_server.address, f"localhost:{registry_server.address.rsplit(':', 1)[1]}")
    commit2 = commit_repo(tmp_path / "repo2", hello_files(elsewhere))
    async with run_stages(nats_server.url, settings, specs, instance="t-build-reg"):
        pub = genuine_publisher(js, settings.data_dir)
        await pub.publish(submitted(other_wl, tmp_path / "repo2", commit2, SPEC.format(base=elsewhere)))
        refused = await first_event(js, other_wl, {EventType.BUILT, EventType.FAILED})
    assert isinstance(refused.payload, Failed), refused.payload
    assert refused.payload.reason.code == "build.base.forbidden" and "may not read" in refused.payload.reason.message
