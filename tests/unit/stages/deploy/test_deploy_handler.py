"""The deploy factory's configuration edges: registry address and credentials, stage declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType
from ccpipe.stages.deploy.handler import deploy_stages, registry_client, registry_credentials


def test_stages_are_push_then_schedule() -> None:
    specs = deploy_stages(load_settings(), Endpoints(nats_url="nats://127.0.0.1:1"))
    assert [(s.name, s.input_type) for s in specs] == [("push", EventType.SIGNED), ("schedule", EventType.PUSHED)]
    assert specs[1].output_types == (EventType.SCHEDULED, EventType.SCHEDULING_PENDING)


def test_no_registry_configured_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no OCI registry"):
        registry_client(load_settings(registry=None), Endpoints(nats_url="nats://127.0.0.1:1"))


def test_credentials_come_from_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    creds = registry_credentials(load_settings(registry_username="ci", registry_password_file=secret))
    assert creds is not None and creds.username == "ci" and creds.password == "s3cret"
    assert "s3cret" not in repr(creds)
    assert registry_credentials(load_settings(registry_username=None)) is None
    with pytest.raises(ConfigurationError, match="no password file"):
        registry_credentials(load_settings(registry_username="ci"))
    with pytest.raises(ConfigurationError, match="cannot read the registry password file"):
        registry_credentials(load_settings(registry_username="ci", registry_password_file=tmp_path / "missing"))
