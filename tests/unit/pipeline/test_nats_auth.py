"""Bus identities: permissions derived from the emitters table, names that match the code, JWTs
that NATS accepts (checked here for format and signature; the real server checks them in
tests/integration/test_nats_least_privilege.py)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import nkeys
import pytest

from ccpipe.pipeline import nats_auth
from ccpipe.pipeline.app import stage_specs
from ccpipe.pipeline.audit.lease import LEASE_BUCKET
from ccpipe.pipeline.audit.service import AUDIT_STREAM, CHECKPOINT_SUBJECT, DURABLE, STATUS_SUBJECT
from ccpipe.pipeline.bus import EVENTS_STREAM
from ccpipe.pipeline.nats_auth import (
    ADMIN,
    ARTIFACT_CONSUMER_DENY,
    ARTIFACT_PURGE,
    NO_PIPELINE_ADMIN,
    Installation,
    permissions_for,
    pipeline_identities,
    public_key,
    runner_identity,
)
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.emitters import Component, emitted_by
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.stages.attest.kbs import nats_service, store_nats
from ccpipe.stages.deploy import inventory_kv, placements_kv
from ccpipe.stages.sign import markers_kv

LONGEST_NODE = "n" * 63


def test_the_names_in_the_permissions_are_the_ones_the_code_uses(tmp_path: Path) -> None:
    assert nats_auth.EVENTS == EVENTS_STREAM
    assert (nats_auth.AUDIT, nats_auth.AUDIT_CHECKPOINTS, nats_auth.AUDIT_STATUS, nats_auth.AUDIT_DURABLE) == (
        AUDIT_STREAM, CHECKPOINT_SUBJECT, STATUS_SUBJECT, DURABLE)
    assert nats_auth.AUDIT_LEASE == LEASE_BUCKET
    assert (nats_auth.NODES, nats_auth.PLACEMENTS) == (inventory_kv.BUCKET, placements_kv.BUCKET)
    assert nats_auth.KBS_BUCKETS == (store_nats.BUCKET, store_nats.NONCE_BUCKET)
    assert nats_auth.SIGN_MARKERS == markers_kv.BUCKET
    assert all(s.startswith(nats_service.SUBJECT_PREFIX + ".") for s in nats_auth.KBS_SUBJECTS)
    settings = load_settings(data_dir=tmp_path)
    names = [spec.name for spec in stage_specs(settings, Endpoints(nats_url="nats://127.0.0.1:4222"))]
    assert tuple(names) == nats_auth.STAGE_DURABLES
    assert all(name in {c.value for c in Component} for name in names)  # a stage's identity is its name


@pytest.mark.parametrize("component", [c for c in Component if c != Component.RUNNER])
def test_event_publish_rights_are_exactly_the_emitters_table(component: Component) -> None:
    published = {s for s in permissions_for(component).publish if s.startswith("ccpipe.evt.")}
    assert published == {f"ccpipe.evt.*.{t.value}" for t in emitted_by(component)}


def test_a_runner_writes_only_its_own_node_key_and_run_claims_and_consumes_only_its_own_durable() -> None:
    perms = permissions_for(runner_identity("n1"))
    # a claim is per workload, and any node may be the one a workload is placed on
    assert [s for s in perms.publish if s.startswith("$KV.")] == ["$KV.CCPIPE_NODES.n1", "$KV.CCPIPE_RUN_CLAIMS.>"]
    assert [s for s in perms.publish if ".MSG.NEXT." in s] == ["$JS.API.CONSUMER.MSG.NEXT.CCPIPE_EVENTS.runner-n1"]


def test_only_the_kbs_serves_the_kbs_subjects_and_answers_requests() -> None:
    for identity in pipeline_identities(["n1"]):
        perms = permissions_for(identity)
        serves = any(s.startswith("ccpipe.kbs.") for s in perms.subscribe)
        assert serves == (identity == Component.KBS) == perms.responds
        if identity not in (Component.KBS, ADMIN):
            assert "ccpipe.kbs.>" in perms.deny_subscribe


def test_every_pipeline_identity_is_denied_stream_administration() -> None:
    for identity in pipeline_identities(["n1"]):
        perms = permissions_for(identity)
        if identity == ADMIN:
            assert perms.publish == ("$JS.API.>", "$KV.CCPIPE_ENROLMENTS.>")
            continue
        consumes_artifacts = identity in (Component.BUILD, Component.SIGN, Component.PUSH)
        assert set(ARTIFACT_CONSUMER_DENY if consumes_artifacts else NO_PIPELINE_ADMIN) <= set(perms.deny_publish)
        # nobody but the admin may write an enrolment (reading them, by sequence, is everyone's)
        assert not any(s.startswith(("$KV.CCPIPE_ENROLMENTS", "$KV.>", ">")) for s in perms.publish)
        # the one purge a pipeline identity holds: a consumed artifact, for the stages that consume them
        granted = [s for s in perms.publish if s.startswith(("$JS.API.STREAM.PURGE", "$JS.API.STREAM.MSG.DELETE"))]
        assert granted == ([ARTIFACT_PURGE] if consumes_artifacts else []), identity
        assert not any(s.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.DELETE",
                                     "$JS.API.STREAM.UPDATE", "$JS.API.>"))
                       for s in perms.publish)
        # a reader may create consumers only without a name: a named create could rewrite a stage's durable
        assert not any(s.startswith("$JS.API.CONSUMER.CREATE.CCPIPE_EVENTS.") for s in perms.publish)


def test_an_unknown_identity_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        permissions_for("mallory")


def _claims(jwt: str) -> dict[str, object]:
    body = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def test_issued_creds_are_private_signed_by_the_account_and_fit_a_stock_server(tmp_path: Path) -> None:
    installation = Installation(tmp_path / "keys")
    for identity in pipeline_identities([LONGEST_NODE]):
        path = installation.issue(identity, tmp_path / "creds")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lines = path.read_text().splitlines()
        jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
        # the CONNECT line carries the JWT; nats-server refuses lines over 4096 bytes by default
        assert len(jwt) < 3500, identity
        claims = _claims(jwt)
        assert claims["iss"] == public_key(installation.seed("account")) and claims["name"] == identity
        header, body, signature = jwt.split(".")
        account = nkeys.from_seed(bytearray(installation.seed("account")))
        assert account.verify(f"{header}.{body}".encode(), base64.urlsafe_b64decode(signature + "=="))
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys" / "account.nk").stat().st_mode) == 0o600


def test_the_installation_keys_are_kept_across_restarts(tmp_path: Path) -> None:
    first = Installation(tmp_path).seed("account")
    assert Installation(tmp_path).seed("account") == first


def test_a_runner_beside_the_embedded_default_gets_its_identity_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert nats_auth.issue_embedded_identity(settings, runner_identity("extra")) is None  # no installation
    nats_auth.issue_embedded_identities(settings, ["n1"])
    issued = nats_auth.issue_embedded_identity(settings, runner_identity("extra"))
    assert issued == tmp_path / "creds" / "runner-extra.creds" and issued.exists()
    assert nats_auth.issue_embedded_identity(settings, runner_identity("extra")) is None  # kept, not re-issued
    assert nats_auth.creds_for(settings, runner_identity("extra")) == str(issued)
