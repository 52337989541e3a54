"""The attested build runner: configuration, the demo base, evidence bound to the provenance."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.errors import ConfigurationError, InvalidInput
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.config import bases_dir, load_build_config, workload_image_dir
from ccpipe.stages.build.provenance import BUILDER_ID_TEE_RUNNER
from ccpipe.stages.build.runner import attested_build, demo_base_reference, ensure_demo_base, names_demo_base
from tests.unit.stages.build.build_helpers import MakeRepo, git, hello_files


def test_config_refuses_an_unknown_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCPIPE_BUILD_TEE_BACKEND", "tpm")
    with pytest.raises(ConfigurationError, match="CCPIPE_BUILD_TEE_BACKEND"):
        load_build_config()
    monkeypatch.setenv("CCPIPE_BUILD_TEE_BACKEND", "sample")
    assert load_build_config().tee_backend == "sample"


def test_image_dirs_stay_under_the_data_dir(tmp_path: Path) -> None:
    assert workload_image_dir(tmp_path, "hello-1", "plain") == tmp_path / "images" / "hello-1" / "plain"
    for bad in ("../etc", "a/b", "", "x\x00"):
        with pytest.raises(InvalidInput):
            workload_image_dir(tmp_path, bad, "plain")
    assert bases_dir(tmp_path) == tmp_path / "bases"
    assert bases_dir(tmp_path, load_build_config(bases_dir=tmp_path / "b")) == tmp_path / "b"


def test_demo_base_is_made_once_and_repaired(tmp_path: Path) -> None:
    bases = tmp_path / "bases"
    ref = demo_base_reference(bases)
    assert names_demo_base(ref, bases) and names_demo_base(f"oci:{bases / 'busybox'}", bases)
    assert not names_demo_base(f"oci:{bases / 'busybox2'}:busybox", bases) and not names_demo_base("scratch", bases)
    layout = ensure_demo_base(bases)
    digest = OciLayout.open(layout).resolve("busybox").digest
    mtime = (layout / "index.json").stat().st_mtime_ns
    assert ensure_demo_base(bases) == layout and (layout / "index.json").stat().st_mtime_ns == mtime
    (layout / "index.json").write_text("{broken")  # a builder died half-way
    ensure_demo_base(bases)
    assert OciLayout.open(layout).resolve("busybox").digest == digest  # same bytes again


def test_evidence_binds_the_provenance(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo(hello_files("scratch"))
    backend = select_backend(tmp_path / "data", prefer="sample")
    done = attested_build(repo, "main", tmp_path / "out", backend=backend, workload_id="wl-1",
                          bases=BaseSources())  # fmt: skip
    assert done.built.provenance_digest == "sha384:" + done.result.provenance_digest.hex()
    assert done.built.runner_evidence.report_data == done.result.report_data.hex()
    sample = json.loads(base64.b64decode(done.built.runner_evidence.evidence))
    assert base64.b64decode(sample["report_data"] + "==").rstrip(b"\0") == done.result.provenance_digest
    run = done.built.provenance["predicate"]["runDetails"]
    assert run["builder"]["id"] == BUILDER_ID_TEE_RUNNER and run["metadata"]["invocationId"] == "wl-1"


def test_a_pinned_commit_is_built_even_if_the_ref_moved(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo(hello_files("scratch"))
    first = git(repo, "rev-parse", "HEAD")
    (repo / "app" / "hello.sh").write_text("#!/bin/sh\necho moved\n")
    git(repo, "commit", "-q", "-am", "moved on")
    backend = select_backend(tmp_path / "data", prefer="sample")
    done = attested_build(repo, "refs/heads/main", tmp_path / "out", backend=backend, commit=first)
    params = done.built.provenance["predicate"]["buildDefinition"]["externalParameters"]
    assert params["commit"] == first and params["ref"] == "refs/heads/main"
