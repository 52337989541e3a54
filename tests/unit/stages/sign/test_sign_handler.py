"""The sign stage's handler without NATS: which attestations it acts on, idempotence, KBS errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.services import Endpoints
from pipeline.settings import load_settings
from schemas.envelope import Event
from schemas.errors import ConfigurationError, InvalidInput, TransientError
from schemas.events import AttestationVerified, Built, EventType, Signed
from stages.sign.config import load_sign_config
from stages.sign.handler import sign_stages
from stages.sign.kbs import AdminClientRegistrar, KbsUnreachable
from stages.sign.workload import ProvenanceNotAttested
from tests.unit.stages.sign.sign_stage_helpers import KBS_URL, RecordingKbs, event, make_built, verified_for

WL = "wl-sign-h"


class WithPurpose(AttestationVerified):
    """The attestation service's payload once it carries ``purpose`` (being added in parallel)."""

    purpose: str = ""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Path]:
    root = tmp_path_factory.mktemp("signh")
    return make_built(root, root / "data", WL), root / "data"


class Trail:
    """Stands in for the JetStream lookup: the events a test put there."""

    def __init__(self, *events: Event) -> None:
        self.events = {e.type: e for e in events}

    async def __call__(self, workload_id: str, etype: EventType) -> Event:
        if etype not in self.events:
            raise InvalidInput(f"no {etype.value}", code="event.missing")
        return self.events[etype]


def handler(data: Path, trail: Trail, kbs: RecordingKbs, *, kbs_url: str | None = KBS_URL):  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=data)
    eps = Endpoints(nats_url="nats://127.0.0.1:1", kbs_url=kbs_url, registry="127.0.0.1:5000")
    (spec,) = sign_stages(settings, eps, config=load_sign_config(register_measurement=False), registrar=kbs,
                          lookup=trail)  # fmt: skip
    assert spec.input_type == EventType.ATTESTATION_VERIFIED and spec.output_types == (EventType.SIGNED,)
    return spec.handler


async def test_build_runner_attestation_is_signed(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = WithPurpose(**verified_for(b).model_dump(), purpose="build-runner")
    (out,) = await run(event(WL, EventType.ATTESTATION_VERIFIED, att))
    assert out.type == EventType.SIGNED and isinstance(out.payload, Signed)
    assert out.subject is not None and out.subject.key_id == out.payload.key_resource
    assert f"ccpipe/{WL}/image-key" in kbs.resources


async def test_other_purposes_are_ignored(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = WithPurpose(**verified_for(b).model_dump(), purpose="enclave")
    assert await run(event(WL, EventType.ATTESTATION_VERIFIED, att)) == []
    assert kbs.calls == []


async def test_build_runner_attestation_of_another_build_fails(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = WithPurpose(**verified_for(b, bound=False).model_dump(), purpose="build-runner")
    with pytest.raises(ProvenanceNotAttested, match="does not bind the provenance"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))
    assert kbs.calls == []  # nothing registered, nothing signed


async def test_without_a_purpose_field_the_binding_decides(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs()
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    if "purpose" in AttestationVerified.model_fields:
        pytest.skip("the attestation payload carries purpose now; covered by the tests above")
    assert await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b, bound=False))) == []
    (out,) = await run(event(WL, EventType.ATTESTATION_VERIFIED, verified_for(b)))
    assert isinstance(out.payload, Signed)


async def test_a_redelivery_after_signed_returns_the_same_payload(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs()
    first_run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = WithPurpose(**verified_for(b).model_dump(), purpose="build-runner")
    (first,) = await first_run(event(WL, EventType.ATTESTATION_VERIFIED, att))
    key = kbs.resources[f"ccpipe/{WL}/image-key"]
    trail = Trail(event(WL, EventType.BUILT, b), event(WL, EventType.SIGNED, first.payload))
    (again,) = await handler(data, trail, kbs)(event(WL, EventType.ATTESTATION_VERIFIED, att))
    assert again.payload == first.payload
    assert kbs.resources[f"ccpipe/{WL}/image-key"] == key  # the published image's key was not replaced


async def test_unreachable_kbs_is_transient(built: tuple[Built, Path]) -> None:
    b, data = built
    kbs = RecordingKbs(fail_with=KbsUnreachable("the KBS at http://127.0.0.1:9 did not answer"))
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), kbs)
    att = WithPurpose(**verified_for(b).model_dump(), purpose="build-runner")
    with pytest.raises(TransientError):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))


async def test_no_kbs_configured_is_a_configuration_error(built: tuple[Built, Path]) -> None:
    b, data = built
    run = handler(data, Trail(event(WL, EventType.BUILT, b)), RecordingKbs(), kbs_url=None)
    att = WithPurpose(**verified_for(b).model_dump(), purpose="build-runner")
    with pytest.raises(ConfigurationError, match="no KBS"):
        await run(event(WL, EventType.ATTESTATION_VERIFIED, att))


async def test_admin_registrar_maps_connection_failures_to_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class RefusingClient:
        def __init__(self, base_url: str, admin_key: object) -> None:
            self.base_url = base_url

        async def set_resource(self, path: str, data: bytes) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

    reg = AdminClientRegistrar("http://127.0.0.1:9", tmp_path)
    monkeypatch.setattr(reg, "_admin_client", lambda: RefusingClient("http://127.0.0.1:9", None))
    with pytest.raises(KbsUnreachable, match="127.0.0.1:9"):
        await reg.set_resource("ccpipe/x/image-key", b"k" * 32)
