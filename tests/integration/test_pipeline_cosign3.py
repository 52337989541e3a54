"""The image the pipeline itself pushed, verified by cosign 3 (Debian's build) in both formats and by ``ccpipe verify``.

One embedded pipeline (``ccpipe up`` in-process: real nats-server, docker-registry with its
passwords, KBS, emulated node) builds, encrypts, signs and pushes the demo workload; cosign then
reads the registry as any verifier would, with the pipeline's public key: the Sigstore bundle
referrer (its default) and the ``.sig`` tag, the SLSA provenance attestation, and another key refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccpipe.pipeline.bus import connect_as
from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.cli.submit import cmd_submit
from ccpipe.pipeline.cli.up import embedded_emulation, running_pipeline
from ccpipe.pipeline.nats_auth import OBSERVER
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.services import registry_password_file
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.events import EventType, Pushed
from ccpipe.stages.sign.config import signing_key_prefix
from tests.integration.pipeline.test_observability import wait_for_end

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
"""The ccpipe subprocesses run from the checkout under test (``python -m`` puts the working directory first)."""


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ, **env})


async def test_the_pipelines_pushed_image_is_verified_by_cosign_3_and_ccpipe_in_both_formats(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    settings, _ = embedded_emulation(load_settings(data_dir=data))
    other = run([sys.executable, "-m", "ccpipe", "keys", "generate", "--output-key-prefix", str(tmp_path / "other")],
                {"CCPIPE_DATA_DIR": str(tmp_path / "elsewhere"), "COSIGN_PASSWORD": "x"}, REPO)
    assert other.returncode == 0, other.stderr
    async with running_pipeline(settings) as eps:
        assert eps.registry
        _, work = make_demo_repository(tmp_path / "repo", data)
        capsys.readouterr()
        assert await cmd_submit(settings, argparse.Namespace(hook=False, path=str(work), ref=None, json=True)) == 0
        workload = json.loads(capsys.readouterr().out)["workload_id"]
        assert await wait_for_end(eps.nats_url, data, workload) is EventType.WORKLOAD_EXITED
        nc = await connect_as(settings, eps.nats_url, OBSERVER)
        try:
            pushed = next(s.event.payload for s in await read_events(nc.jetstream(), workload)
                          if s.event and s.event.type is EventType.PUSHED)
        finally:
            await nc.close()
        assert isinstance(pushed, Pushed)
        image = f"{pushed.registry}/{pushed.repository}@{pushed.image_digest}"
        key = f"{signing_key_prefix(data)}.pub"
        login = ["--registry-username", "ccpipe-pull",
                 "--registry-password=" + registry_password_file(data, "pull").read_text().strip()]
        common = ["--insecure-ignore-tlog", "--allow-http-registry", *login]
        for fmt in ((), ("--new-bundle-format=false",)):  # the bundle referrer (cosign 3's default), the .sig tag
            ok = run(["cosign", "verify", "--key", key, *common, *fmt, image], {}, tmp_path)
            assert ok.returncode == 0, (fmt, ok.stderr)
            claim = json.loads(ok.stdout)[0]["critical"]
            assert claim["image"]["docker-manifest-digest"] == pushed.image_digest
            if fmt:  # the .sig's signed payload names the repository (a bundle's claim echoes the reference asked)
                assert claim["identity"]["docker-reference"] == f"{pushed.registry}/{pushed.repository}"
            att = run(["cosign", "verify-attestation", "--key", key, "--type", "slsaprovenance1", *common, *fmt,
                       image], {}, tmp_path)
            assert att.returncode == 0, (fmt, att.stderr)
            refused = run(["cosign", "verify", "--key", str(tmp_path / "other.pub"), *common, *fmt, image], {},
                          tmp_path)
            assert refused.returncode != 0, fmt
        # as a user of the embedded default runs it: the reference `pushed` names, nothing configured
        env = {"CCPIPE_DATA_DIR": str(data)}
        ours = run([sys.executable, "-m", "ccpipe", "verify", "--key", key, pushed.reference], env, REPO)
        assert ours.returncode == 0 and "Sigstore bundle" in ours.stdout, ours.stderr
        provenance = run([sys.executable, "-m", "ccpipe", "verify-attestation", "--key", key,
                          "--type", "https://slsa.dev/provenance/v1", pushed.reference], env, REPO)
        assert provenance.returncode == 0, provenance.stderr
        wrong = run([sys.executable, "-m", "ccpipe", "verify", "--key", str(tmp_path / "other.pub"),
                     pushed.reference], env, REPO)
        assert wrong.returncode == 1 and "with this key" in wrong.stderr, wrong.stderr
