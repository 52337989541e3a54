"""The pushed source reaches a build host that shares no disk with the pusher (issue 16), on a real
nats-server with authentication on.

The pusher's host, the build host and the sign host have data directories of their own. What must
hold: ``ccpipe submit`` names no local path but a stored source sealed to the enrolled build keys;
the build host builds the pushed commit from it and purges it once `built` is stored; whoever reads
NATS sees ciphertext;
a wrong digest, a missing build enrolment and a local path in an enrolled installation are refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError, ObjectNotFoundError

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.artifacts import (
    ArtifactError,
    ArtifactRef,
    forget_artifact,
    load_or_create_sealing_key,
    read_stored,
    sealing_public_jwk,
)
from ccpipe.pipeline.bus import EventPublisher, connect_as
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.enrolment_bus import configured_admin_key, enrol, mirrored_enrolments
from ccpipe.pipeline.event_signature import load_or_create_component_key
from ccpipe.pipeline.nats_auth import ADMIN, ARTIFACTS, EVENTS, OBSERVER
from ccpipe.pipeline.quick_submit import quick_submit
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import event_signer
from ccpipe.pipeline.source_bundles import fetch_source, store_source
from ccpipe.pipeline.stagehost import run_stages
from ccpipe.pipeline.trigger import make_submission, resolve_push
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.events import Built, EventType, Failed, Submitted
from ccpipe.stages.build.checkout import checkout_commit
from ccpipe.stages.build.handler import build_stages
from tests.integration.conftest import Installed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


async def _enrol(installed: Installed, component: str, host: Settings) -> None:
    """What 'ccpipe admin enrol COMPONENT $(ccpipe admin public-key COMPONENT)' does for ``host``."""
    nc = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        sealing = sealing_public_jwk(host.data_dir, component) if component in ("build", "sign") else None
        await enrol(nc.jetstream(), installed.admin.data_dir, component,
                    load_or_create_component_key(host.data_dir, component).public_key, sealing)
    finally:
        await nc.close()


def _commit(work: Path) -> str:
    return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


async def test_the_source_is_sealed_to_the_enrolled_build_host_fetched_by_digest_and_purged(
        installed: Installed, tmp_path: Path) -> None:
    client = installed.host("pusher-a", "submit")
    build = installed.host("build-src-a", "build")
    configured_admin_key(client)  # pins CCPIPE_ADMIN_KEY, as every command of that host does
    _, work = make_demo_repository(tmp_path / "demo", client.data_dir)
    commit = _commit(work)
    submitter = await connect_as(client, installed.url, "submit")
    builder = await connect_as(build, installed.url, "build")
    operator = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        # no build host enrolled yet: nothing can be sealed to it, and the submit says so
        with pytest.raises(ConfigurationError, match="no sealing key of the build stage is enrolled"):
            await store_source(submitter.jetstream(), client.data_dir, "wl-src", work, commit)
        await _enrol(installed, "build", build)
        ref = await store_source(submitter.jetstream(), client.data_dir, "wl-src", work, commit)
        assert ref.name.startswith("wl-src/source/")
        # whoever reads NATS sees ciphertext only
        stored = await read_stored(operator.jetstream(), ref.name)
        assert b"#!/bin/sh" not in stored and b"ccpipe.toml" not in stored
        # the build host (its own data directory, no repository there) gets exactly that commit
        bare = await fetch_source(builder.jetstream(), ref, tmp_path / "b" / "repo.git",
                                  load_or_create_sealing_key(build.data_dir, "build"), commit, "refs/heads/main")
        tree = checkout_commit(bare, commit, work_root=tmp_path)
        assert (tree.path / "ccpipe.toml").read_bytes() == (work / "ccpipe.toml").read_bytes()
        # a reference with another digest is refused, whatever the name holds
        with pytest.raises(ArtifactError, match="not the sha256:") as err:
            await fetch_source(builder.jetstream(), ArtifactRef(ref.name, "sha256:" + "0" * 64), tmp_path / "x",
                               load_or_create_sealing_key(build.data_dir, "build"), commit, "refs/heads/main")
        assert err.value.code == "artifact.digest"
        # a host whose key nobody enrolled cannot open it
        with pytest.raises(ArtifactError, match="does not open"):
            await fetch_source(builder.jetstream(), ref, tmp_path / "y",
                               load_or_create_sealing_key(tmp_path / "stranger", "build"), commit, "refs/heads/main")
        # the submit credential stores sources but purges nothing; the build credential purges what it used
        with pytest.raises((NatsError, TimeoutError)):
            await submitter.jetstream().purge_stream(f"OBJ_{ARTIFACTS}", subject=f"$O.{ARTIFACTS}.M.>")
        with pytest.raises((NatsError, TimeoutError)):
            await builder.jetstream().purge_stream(EVENTS)
        await forget_artifact(builder.jetstream(), ref)
        with pytest.raises((ObjectNotFoundError, NotFoundError)):
            await read_stored(operator.jetstream(), ref.name)
    finally:
        for c in (submitter, builder, operator):
            await c.close()


def _submit(work: Path, client: Settings, installed: Installed, admin_key: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCPIPE_", "GIT_"))}
    env.update(GIT_ENV, CCPIPE_DATA_DIR=str(client.data_dir), CCPIPE_NATS_URL=installed.url,
               CCPIPE_NATS_CREDS=str(installed.creds / "submit.creds"))
    if admin_key is not None:
        env["CCPIPE_ADMIN_KEY"] = admin_key
    out = subprocess.run([sys.executable, "-m", "ccpipe", "submit", str(work)], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("submitted workload ")[1].split()[0]


async def _wait_for(installed: Installed, workloads: list[str], timeout: float) -> dict[str, list[Event]]:
    nc = await connect_as(installed.admin, installed.url, OBSERVER)
    deadline = time.monotonic() + timeout
    found: dict[str, list[Event]] = {}
    try:
        while time.monotonic() < deadline:
            for wid in workloads:
                found[wid] = [s.event for s in await read_events(nc.jetstream(), wid) if s.event]
            done = [w for w in workloads
                    if any(e.type in (EventType.BUILT, EventType.FAILED) for e in found[w])]
            if len(done) == len(workloads):
                break
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
    return found


async def test_a_build_host_without_the_repository_builds_what_ccpipe_submit_pushed(
        installed: Installed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = installed.host("pusher-b", "submit")
    build = installed.host("build-src-b", "build")
    sign = installed.host("sign-src-b", "sign")
    for component, host in (("submit", client), ("build", build), ("sign", sign)):
        await _enrol(installed, component, host)
    _, work = make_demo_repository(tmp_path / "demo", client.data_dir)
    admin_key = (installed.admin.data_dir / "keys" / "admin" / "admin.pub").read_text().strip()
    # first submit: the admin key is pinned on the way (the full path); second: already pinned
    workloads = [_submit(work, client, installed, admin_key), _submit(work, client, installed, None)]
    # the light path (what the hook runs) takes an enrolled push itself rather than declining it
    environ = {"CCPIPE_DATA_DIR": str(client.data_dir), "CCPIPE_NATS_URL": installed.url,
               "CCPIPE_NATS_CREDS": str(installed.creds / "submit.creds"), "CCPIPE_ADMIN_KEY": admin_key}
    assert await asyncio.to_thread(quick_submit, [resolve_push(work, None)], environ, as_json=True) == 0
    workloads.append(json.loads(capsys.readouterr().out)["workload_id"])
    # and one event naming a local path, as a pusher's ccpipe without the admin key would write it
    nc = await connect_as(client, installed.url, "submit")
    try:
        by_path = make_submission(resolve_push(work, None))
        await EventPublisher(nc.jetstream(), signer=event_signer(client.data_dir)).publish(by_path)
    finally:
        await nc.close()
    workloads.append(by_path.workload_id)
    specs = build_stages(build, Endpoints(nats_url=installed.url), select_backend=select_backend)
    async with mirrored_enrolments(build, installed.url, "build"), run_stages(installed.url, build, specs):
        found = await _wait_for(installed, workloads, timeout=150)
        # a redelivery of an input whose source is gone (a replica killed after the purge, before its
        # ack) is answered with the `built` the trail holds, not failed for the missing source
        first = next(e for e in found[workloads[0]] if e.type == EventType.SUBMITTED)
        again = await specs[0].handler(first)
        stored_built = next(e for e in found[workloads[0]] if e.type == EventType.BUILT)
        assert [(o.type, o.payload) for o in again] == [(EventType.BUILT, stored_built.payload)]
    assert not (build.data_dir / "demo").exists() and str(work) not in str(build.data_dir)
    commit = _commit(work)
    for wid in workloads[:3]:
        events = found[wid]
        submitted = next(e.payload for e in events if e.type == EventType.SUBMITTED)
        assert isinstance(submitted, Submitted) and submitted.repo.startswith("ccpipe-artifact:CCPIPE_ARTIFACTS/"), \
            submitted
        built = [e.payload for e in events if e.type == EventType.BUILT]
        failed = [e.payload for e in events if e.type == EventType.FAILED]
        assert len(built) == 1 and not failed, failed
        assert isinstance(built[0], Built)
        # the provenance names the stored source it was built from, and the commit
        source = built[0].provenance["predicate"]["buildDefinition"]["resolvedDependencies"][0]
        assert source["uri"] == submitted.repo and source["digest"] == {"gitCommit": commit}, source
        # once `built` is stored the source (megabytes for a repository with a binary) is purged
        operator = await connect_as(installed.admin, installed.url, ADMIN)
        try:
            ref = ArtifactRef.parse(submitted.repo)
            assert ref is not None
            with pytest.raises((ObjectNotFoundError, NotFoundError)):
                await read_stored(operator.jetstream(), ref.name)
        finally:
            await operator.close()
    refused = [e.payload for e in found[by_path.workload_id] if e.type == EventType.FAILED]
    assert len(refused) == 1 and isinstance(refused[0], Failed)
    assert refused[0].reason.code == "source.path" and str(work) in refused[0].reason.message
