"""The sign stage's handler without NATS: which attestations it acts on, idempotence, KBS errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError, InvalidInput, TransientError
from ccpipe.schemas.events import Built, EventType, Signed, Submitted
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.admin_auth import ensure_admin_keypair
from ccpipe.stages.attest.kbs.errors import KbsUnavailable
from ccpipe.stages.sign import decrypt_image
from ccpipe.stages.sign.config import load_sign_config
from ccpipe.stages.sign.handler import sign_stages
from ccpipe.stages.sign.kbs import LazyAdminRegistrar
from ccpipe.stages.sign.once import AlreadySigned
from ccpipe.stages.sign.recipients import ImageKey
from ccpipe.stages.sign.workload import ImageNotProvenanceSubject, ProvenanceNotAttested
from tests.unit.stages.sign.sign_stage_helpers import (
    KBS_URL,
    MemoryMarkers,
    RecordingKbs,
    event,
    make_built,
    submitted,
    verified_for,
)

WL = "wl-sign-h"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Path]:
    root = tmp_path_factory.mktemp("signh")
    return make_built(root, root / "data", WL), root / "data"


class Trail:
    """Stands in for the JetStream lookup: the events a test put there."""

    def __init__(self, *events: Event) -> None:
        # the workload's push is always there: the stage registers its spec's [tee] requirements
        self.events = {EventType.SUBMITTED: submitted(WL, Path("repo"), "c" * 40), **{e.type: e for e in events}}

    async def __call__(self, workload_id: str, etype: EventType) -> Event:
        if etype not in self.events:
            raise InvalidInput(f"no {etype.value}", code="event.missing")
        return self.events[etype]


def handler(data: Path, trail: Trail, kbs: RecordingKbs, *, kbs_url: str | None = KBS_URL,  # type: ignore[no-untyped-def]
            markers: MemoryMarkers | None = None):
    settings = load_settings(data_dir=data)
    eps = Endpoints(nats_url="nats://127.0.0.1:1", kbs_url=kbs_url, registry="127.0.0.1:5000")
    (spec,) = sign_stages(settings, eps, config=load_sign_config(register_measurement=False), registrar=kbs,
                          lookup=trail, markers=markers or MemoryMarkers())  # fmt: skip
    assert spec.input_type == EventType.ATTESTATION_VERIFIED and spec.output_types == (EventType.SIGNED,)
    return spec.handler


async def test_build_runner_attestation_is_signed(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = verified_for(b)
    (out,) = await run(event(WL, EventType.ATTESTATION_VERIFIED, att))
    assert out.type == EventType.SIGNED and isinstance(out.payload, Signed)
    # the KBS got the workload's own [tee] requirements (the spec's), to release its key by
    spec = Trail().events[EventType.SUBMITTED].payload
    assert isinstance(spec, Submitted)
    registered = TeeRequirements.model_validate_json(kbs.resources[f"ccpipe/{WL}/tee-requirements"])
    assert registered == spec.spec.tee
    assert out.subject is not None and out.subject.key_id == out.payload.key_resource
    assert f"ccpipe/{WL}/image-key" in kbs.resources


async def test_other_purposes_are_ignored(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = verified_for(b).model_copy(update={"purpose": "enclave"})
    assert await run(event(WL, EventType.ATTESTATION_VERIFIED, att)) == []
    assert kbs.calls == []


async def test_build_runner_attestation_of_another_build_fails(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = verified_for(b, bound=False)
    with pytest.raises(ProvenanceNotAttested, match="does not bind the provenance"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))
    assert kbs.calls == []  # nothing registered, nothing signed


async def test_a_redelivery_after_signed_returns_the_same_payload(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    kbs, markers = RecordingKbs(), MemoryMarkers()
    first_run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs, markers=markers)
    att = event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b))
    (first,) = await first_run(att)
    key = kbs.resources[f"ccpipe/{WL}/image-key"]
    trail = Trail(event(WL, EventType.BUILT, b), event(WL, EventType.SIGNED, first.payload))
    (again,) = await handler(data, trail, kbs, markers=markers)(att)  # another replica, the same input
    assert again.payload == first.payload
    assert kbs.resources[f"ccpipe/{WL}/image-key"] == key  # the published image's key was not replaced


async def test_another_attestation_for_a_signed_workload_is_refused(built: tuple[Built, Path], tmp_path: Path) -> None:
    b = built[0]
    kbs, markers = RecordingKbs(), MemoryMarkers()
    run = handler(tmp_path, Trail(event(WL, EventType.BUILT, b)), kbs, markers=markers)
    await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    key = kbs.resources[f"ccpipe/{WL}/image-key"]
    # a genuine attestation again, as a new event (a replayed `built` re-appraised, or a second build)
    with pytest.raises(AlreadySigned, match="is signed for attestation"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert kbs.calls.count(f"resource:ccpipe/{WL}/image-key") == 1
    assert kbs.resources[f"ccpipe/{WL}/image-key"] == key


async def test_an_image_that_is_not_the_provenance_subject_is_not_signed(built: tuple[Built, Path],
                                                                          tmp_path: Path) -> None:
    b = built[0]
    kbs = RecordingKbs()
    # the attested provenance, but another image beside it (one the layout holds: its config blob)
    other = b.model_copy(update={"image_digest": _config_digest(b)})
    run = handler(tmp_path, Trail(event(WL, EventType.BUILT, other)), kbs)
    with pytest.raises(ImageNotProvenanceSubject, match="is not a subject of its provenance"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert kbs.calls == []


def _config_digest(built: Built) -> str:
    layout = OciLayout.open(built.layout)
    return str(layout.read_manifest(layout.resolve_image(built.image_digest)).config.digest)


async def test_unreachable_kbs_is_transient(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    kbs = RecordingKbs(fail_with=KbsUnavailable("KBS admin API at http://127.0.0.1:9 did not answer"))
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = verified_for(b)
    with pytest.raises(TransientError):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))


async def test_no_kbs_configured_is_a_configuration_error(built: tuple[Built, Path], tmp_path: Path) -> None:
    b, data = built[0], tmp_path  # a fresh data directory: no receipt of another test
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), RecordingKbs(), kbs_url=None)
    att = verified_for(b)
    with pytest.raises(ConfigurationError, match="no KBS"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))


async def test_two_deliveries_at_once_sign_once(built: tuple[Built, Path], tmp_path: Path) -> None:
    b = built[0]
    kbs = RecordingKbs()
    att = event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b))
    markers = MemoryMarkers()  # the replicas meet in the same bucket
    runs = [handler(tmp_path, Trail(event(WL, EventType.BUILT, b)), kbs, markers=markers) for _ in range(2)]
    (one,), (two,) = await asyncio.gather(runs[0](att), runs[1](att))
    assert one.payload == two.payload
    assert kbs.calls.count(f"resource:ccpipe/{WL}/image-key") == 1  # one key, the one behind the image
    signed = one.payload
    assert isinstance(signed, Signed)
    kek = kbs.resources[f"ccpipe/{WL}/image-key"]
    back = decrypt_image(f"oci:{signed.layout}:hello", tmp_path / "back", [ImageKey(signed.key_resource, kek)])
    assert back.manifest_digest == b.image_digest


async def test_admin_registrar_against_a_closed_port_is_transient(tmp_path: Path) -> None:
    ensure_admin_keypair(tmp_path)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reg = LazyAdminRegistrar(f"http://127.0.0.1:{port}", tmp_path)
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        await reg.set_resource("ccpipe/x/image-key", b"k" * 32)


async def test_admin_registrar_without_an_admin_key_is_a_configuration_error(tmp_path: Path) -> None:
    reg = LazyAdminRegistrar("http://127.0.0.1:9", tmp_path)
    with pytest.raises(ConfigurationError, match="admin key"):
        await reg.set_resource("ccpipe/x/image-key", b"k" * 32)


async def test_without_the_submitted_spec_nothing_is_registered(built: tuple[Built, Path], tmp_path: Path) -> None:
    b = built[0]
    kbs = RecordingKbs()
    trail = Trail(event(WL, EventType.BUILT, b))
    del trail.events[EventType.SUBMITTED]  # no spec: no [tee] requirements to release the key by
    with pytest.raises(InvalidInput):
        await handler(tmp_path, trail, kbs)(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert kbs.calls == []


def _files_by_digest(root: Path) -> dict[str, Path]:
    return {"sha256:" + hashlib.sha256(p.read_bytes()).hexdigest(): p for p in root.rglob("*") if p.is_file()}


async def test_after_signing_no_plaintext_layer_remains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    b = make_built(tmp_path, data, WL)  # the build stage's own output: <data>/images/<wl>/plain
    plain = Path(b.layout)
    assert plain == data / "images" / WL / "plain"
    assert plain.stat().st_mode & 0o777 == 0o700  # other users cannot read the plaintext while it exists
    manifest = json.loads(OciLayout.open(plain).read_blob(b.image_digest))
    layers = {layer["digest"] for layer in manifest["layers"]}
    assert layers and layers <= _files_by_digest(data).keys()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), RecordingKbs())
    (out,) = await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert out.type == EventType.SIGNED
    assert not plain.exists()
    assert not layers & _files_by_digest(data).keys()  # no copy of a plaintext layer anywhere in the data dir
    assert Path(out.payload.layout).is_dir()  # the encrypted image stays for the push


async def test_a_layout_named_by_the_event_elsewhere_is_not_deleted(built: tuple[Built, Path], tmp_path: Path) -> None:
    b = built[0]  # built into another data directory than the handler's
    run = handler(tmp_path, Trail(event(WL, EventType.BUILT, b)), RecordingKbs())
    (out,) = await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert out.type == EventType.SIGNED and Path(b.layout).is_dir()
