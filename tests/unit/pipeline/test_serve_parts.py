"""What ``ccpipe up --only`` and ``ccpipe serve`` run, and how many copies the cluster keeps."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ccpipe.pipeline.app import COMPONENTS, SERVICE_COMPONENT, STAGE_FACTORIES, stage_specs
from ccpipe.pipeline.bus import check_provisioned, cluster_replicas, require_replicas
from ccpipe.pipeline.cli.up import only_components
from ccpipe.pipeline.nats_auth import BUS_STREAMS, provisioned_streams, runner_identity
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.errors import ConfigurationError, InvalidInput


def connected_to(info: dict[str, Any]) -> Any:
    """A JetStream context whose connection got ``info`` as the server's INFO."""
    return SimpleNamespace(_nc=SimpleNamespace(_server_info=info))


def test_only_names_components_and_the_infrastructure() -> None:
    assert only_components(None) == COMPONENTS
    assert only_components("nats,registry") == ()
    assert only_components("audit, nats,kbs") == ("kbs", "audit")
    with pytest.raises(InvalidInput, match="no part called web"):
        only_components("nats,web")


def test_every_component_has_something_to_run() -> None:
    owners = {c for _, cs in STAGE_FACTORIES for c in cs} | set(SERVICE_COMPONENT.values())
    assert owners == set(COMPONENTS)


def test_serving_one_component_makes_only_its_stages() -> None:
    settings = load_settings()
    eps = Endpoints(nats_url="nats://127.0.0.1:1")
    assert [s.name for s in stage_specs(settings, eps, ("build",))] == ["build"]
    assert [s.name for s in stage_specs(settings, eps, ("schedule",))] == ["schedule"]
    assert stage_specs(settings, eps, ("kbs", "audit")) == []


def test_cluster_size_comes_from_the_servers_info() -> None:
    assert cluster_replicas(connected_to({"server_name": "x"})) == 1
    assert cluster_replicas(connected_to({"cluster": "c", "connect_urls": ["a:1", "b:1"]})) == 2
    assert cluster_replicas(connected_to({"cluster": "c", "connect_urls": [f"h{i}:1" for i in range(5)]})) == 3
    assert cluster_replicas(connected_to({"cluster": "c"})) == 3  # no_advertise: assume a real cluster


def test_too_few_replicas_name_the_stream_or_bucket_and_the_fix() -> None:
    require_replicas("KV_CCPIPE_NODES", 3, 3)
    with pytest.raises(ConfigurationError, match="bucket CCPIPE_NODES has 1 replica") as err:
        require_replicas("KV_CCPIPE_NODES", None, 3)
    assert "nats stream edit KV_CCPIPE_NODES --replicas 3" in (err.value.hint or "")


async def test_a_missing_stream_is_named_with_how_to_provision_it() -> None:
    from nats.js.errors import NotFoundError

    class Js:
        _nc = SimpleNamespace(_server_info={})

        async def stream_info(self, name: str) -> Any:
            raise NotFoundError

    with pytest.raises(ConfigurationError, match="bucket CCPIPE_SIGN_MARKERS does not exist") as err:
        await check_provisioned(Js(), ("KV_CCPIPE_SIGN_MARKERS",))  # type: ignore[arg-type]
    assert "ccpipe up --only nats,registry" in (err.value.hint or "")


def test_each_identity_checks_what_it_uses_and_the_admin_provisions_all() -> None:
    assert provisioned_streams("build") == ("CCPIPE_EVENTS", "KV_CCPIPE_ENROLMENTS", "OBJ_CCPIPE_ARTIFACTS")
    assert "KV_CCPIPE_SIGN_MARKERS" in provisioned_streams("sign")
    assert "CCPIPE_AUDIT" in provisioned_streams("audit")
    assert "KV_CCPIPE_NODES" in provisioned_streams(runner_identity("n1"))
    used = {s for c in (*COMPONENTS[:-1], runner_identity("n1")) for s in provisioned_streams(c)}
    assert used <= set(BUS_STREAMS)

