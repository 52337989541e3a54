"""The deploy factory's configuration edges: registry address and credentials, stage declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.pipeline.services import Endpoints, registry_credentials, write_registry_credentials
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import EventType
from ccpipe.stages.deploy.handler import deploy_stages, registry_client


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
    creds = registry_credentials(load_settings(registry_username="ci", registry_password_file=secret), "push")
    assert creds is not None and creds.username == "ci" and creds.password == "s3cret"
    assert "s3cret" not in repr(creds)
    assert registry_credentials(load_settings(registry_username=None, data_dir=tmp_path), "push") is None
    with pytest.raises(ConfigurationError, match="no password file"):
        registry_credentials(load_settings(registry_username="ci"), "push")
    with pytest.raises(ConfigurationError, match="cannot read the registry password file"):
        registry_credentials(load_settings(registry_username="ci", registry_password_file=tmp_path / "missing"), "push")


def test_the_embedded_registry_passwords_are_private_and_used_only_for_it(tmp_path: Path) -> None:
    htpasswd = write_registry_credentials(tmp_path)
    users = [line.split(":", 1)[0] for line in htpasswd.read_text().splitlines()]
    assert users == ["ccpipe-push", "ccpipe-pull"]
    assert (tmp_path / "creds").stat().st_mode & 0o777 == 0o700
    for role in ("push", "pull"):
        assert (tmp_path / "creds" / f"registry-{role}.password").stat().st_mode & 0o777 == 0o600
    push = registry_credentials(load_settings(registry=None, data_dir=tmp_path), "push")
    assert push is not None and push.username == "ccpipe-push"
    assert push.password not in htpasswd.read_text()  # only its bcrypt hash is served
    # a configured (external) registry never gets the embedded registry's password
    assert registry_credentials(load_settings(registry="registry.example:5000", data_dir=tmp_path), "push") is None
