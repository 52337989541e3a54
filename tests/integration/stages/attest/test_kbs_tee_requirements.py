"""The KBS releases a workload's key only to a verified TEE that meets the workload's ``[tee]``
requirements, over HTTP and over NATS: each refusal is one ``key.denied`` naming the requirement.

The enclave is always a valid emulated SEV-SNP guest (reported TCB snp 23, see
``ccpipe.enclave_runner.tee.emulated_pki``) launched with the workload's initdata: everything
but the requirement under test is right.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from test_kbs_rcar import SECRET, Harness, initdata_for, register_requirements

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.schemas.events import EventType
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.appraisal import AttestationService
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.client import Transport, fetch_resource
from ccpipe.stages.attest.kbs.errors import KbsRefused
from ccpipe.stages.attest.kbs.nats_service import NatsKbs, NatsTransport
from ccpipe.stages.attest.kbs.service import build_kbs, publisher_for, serve_http
from ccpipe.stages.attest.kbs.store import FileBackend

pytestmark = pytest.mark.integration


class Setup:
    """A KBS serving RCAR over HTTP and NATS; requests go over ``transport`` (None: HTTP)."""

    def __init__(self, harness: Harness, transport: Transport | None) -> None:
        self.harness, self.transport = harness, transport

    async def fetch(self, workload: str) -> bytes:
        """The workload's image key, asked for by its own emulated SNP enclave."""
        return await fetch_resource(self.harness.url, self.harness.backend(workload), f"ccpipe/{workload}/image-key",
                                    workload_id=workload, tee="snp", init_data=initdata_for(workload),
                                    transport=self.transport)


@pytest.fixture(params=["http", "nats"])
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def kbs_setup(data_dir: Path, js: JetStreamContext, nc: NatsClient, kind: str, *,
                    installation_allows_emulated: bool, service_allows_emulated: bool | None = None,
                    ) -> AsyncIterator[Setup]:
    """A KBS whose installation does (not) allow emulation; ``service_allows_emulated`` lets its
    attestation service differ (to show the release check holds on its own)."""
    EmulatedSnpBackend(data_dir)  # the emulated PKI exists before the verifier looks for it
    service = None
    if service_allows_emulated is not None:
        service = AttestationService.for_data_dir(data_dir, allow_emulated=service_allows_emulated)
    kbs = build_kbs(data_dir, publisher_for(js, data_dir), FileBackend(data_dir / "kbs-resources"),
                    allow_emulated=installation_allows_emulated, service=service)
    over_nats = NatsKbs(kbs.core, kbs.releaser)
    await over_nats.start(nc)
    try:
        async with serve_http(kbs) as url:
            admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
            harness = Harness(url, kbs, admin, data_dir, js)
            yield Setup(harness, NatsTransport(nc) if kind == "nats" else None)
    finally:
        await over_nats.stop()


@pytest.fixture
async def setup(data_dir: Path, js: JetStreamContext, nc: NatsClient, transport_kind: str) -> AsyncIterator[Setup]:
    """An installation that allows emulated TEEs (the embedded default on a machine without one)."""
    async for s in kbs_setup(data_dir, js, nc, transport_kind, installation_allows_emulated=True):
        yield s


async def register(setup: Setup, workload: str, tee: TeeRequirements) -> None:
    """Reference values and key (as the sign stage registers them), then ``tee`` as the requirements."""
    await setup.harness.register(workload)
    await register_requirements(setup.harness.admin, workload, tee)


async def denied_for(setup: Setup, workload: str) -> Any:
    """Asks for the key, expects a PolicyDeny; returns the one ``key.denied`` event."""
    with pytest.raises(KbsRefused) as info:
        await setup.fetch(workload)
    assert info.value.variant == "PolicyDeny"
    assert "tee." not in str(info.value)  # which requirement failed goes to the trail, not the requester
    events = await setup.harness.events(workload)
    assert [e.type for e in events] == [EventType.ATTESTATION_VERIFIED, EventType.KEY_DENIED]
    return events[-1]


async def test_tdx_only_workload_gets_no_key_from_an_snp_enclave(setup: Setup, workload_id: str) -> None:
    await register(setup, workload_id, TeeRequirements(types=[TeeType.TDX], allow_emulated=True))
    denied = await denied_for(setup, workload_id)
    assert denied.payload.rule == "ccpipe:tee.types"
    assert "types: TEE snp is not one of tdx" in denied.payload.reason.message


async def test_tcb_below_the_minimum_gets_no_key(setup: Setup, workload_id: str) -> None:
    await register(setup, workload_id, TeeRequirements(types=[TeeType.SNP], allow_emulated=True, min_tcb={"snp": 24}))
    denied = await denied_for(setup, workload_id)
    assert denied.payload.rule == "ccpipe:tee.min_tcb"
    assert "min_tcb: TCB snp 23 < 24" in denied.payload.reason.message


async def test_workload_refusing_emulation_gets_no_key_where_the_installation_allows_it(
    setup: Setup, workload_id: str
) -> None:
    await register(setup, workload_id, TeeRequirements(types=[TeeType.SNP], allow_emulated=False))
    denied = await denied_for(setup, workload_id)
    assert denied.payload.rule == "ccpipe:tee.allow_emulated"
    assert "workload does not allow emulation" in denied.payload.reason.message


async def test_workload_meeting_its_requirements_gets_its_key(setup: Setup, workload_id: str) -> None:
    await register(setup, workload_id, TeeRequirements(types=[TeeType.TDX, TeeType.SNP], allow_emulated=True,
                                                       min_tcb={"snp": 23, "microcode": 25, "bootloader": 10}))
    assert await setup.fetch(workload_id) == SECRET
    assert [e.type for e in await setup.harness.events(workload_id)] == [
        EventType.ATTESTATION_VERIFIED, EventType.KEY_RELEASED]


async def test_key_without_registered_requirements_is_not_released(setup: Setup, workload_id: str) -> None:
    await setup.harness.register(workload_id)
    await setup.harness.admin.delete_resource(f"ccpipe/{workload_id}/tee-requirements")
    denied = await denied_for(setup, workload_id)
    assert denied.payload.rule == "ccpipe:tee.requirements"


async def test_installation_refusing_emulation_releases_nothing_to_an_emulated_enclave(
    data_dir: Path, js: JetStreamContext, nc: NatsClient, transport_kind: str, workload_id: str
) -> None:
    async for s in kbs_setup(data_dir, js, nc, transport_kind, installation_allows_emulated=False):
        await register(s, workload_id, TeeRequirements(types=[TeeType.SNP], allow_emulated=True))
        with pytest.raises(KbsRefused):
            await s.fetch(workload_id)
        events = await s.harness.events(workload_id)
        assert [e.type for e in events] == [EventType.ATTESTATION_REJECTED]  # refused at appraisal already
        assert events[0].payload.reason.code == "attest.evidence.emulated"


async def test_installation_refusing_emulation_is_enforced_at_release_too(
    data_dir: Path, js: JetStreamContext, nc: NatsClient, transport_kind: str, workload_id: str
) -> None:
    # an attestation service that accepts emulated evidence (shared, or configured apart) does
    # not make this installation release keys to it
    async for s in kbs_setup(data_dir, js, nc, transport_kind, installation_allows_emulated=False,
                             service_allows_emulated=True):
        await register(s, workload_id, TeeRequirements(types=[TeeType.SNP], allow_emulated=True))
        denied = await denied_for(s, workload_id)
        assert denied.payload.rule == "ccpipe:tee.allow_emulated"
        assert "installation refuses emulation" in denied.payload.reason.message
