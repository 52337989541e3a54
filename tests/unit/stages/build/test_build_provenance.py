"""Provenance: in-toto Statement v1 + SLSA v1 fields, canonical digest, strict schema."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.events import Built
from ccpipe.schemas.provenance import CCPIPE_BUILD_TYPE, ResourceDescriptor, Statement
from ccpipe.stages.build.base.resolve import BaseSources
from ccpipe.stages.build.core import BuildResult, build_from_repo
from ccpipe.stages.build.provenance import BUILDER_ID_TEE_RUNNER, provenance_digest, report_data, statement_json
from tests.unit.stages.build.build_helpers import MakeRepo, git, hello_files

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2025, 3, 1, 12, 0, 7, tzinfo=UTC)


@pytest.fixture
def result(make_repo: MakeRepo, busybox_layout: Path, tmp_path: Path) -> BuildResult:
    repo = make_repo(hello_files(f"oci:{busybox_layout}:busybox"), executable=("app/hello.sh",))
    times = iter([T0, T1])
    return build_from_repo(
        repo, "refs/heads/main", tmp_path / "out", workload_id="wl-42", builder_id=BUILDER_ID_TEE_RUNNER,
        bases=BaseSources(oci_roots=(busybox_layout.parent,)), clock=lambda: next(times),
    )  # fmt: skip


def test_statement_fields(result: BuildResult) -> None:
    doc: dict[str, Any] = statement_json(result.provenance)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "hello", "digest": {"sha256": result.image_digest.removeprefix("sha256:")}}]
    bd = doc["predicate"]["buildDefinition"]
    assert bd["buildType"] == CCPIPE_BUILD_TYPE
    assert bd["externalParameters"] == {
        "repository": result.repository, "ref": "refs/heads/main", "commit": result.commit,
        "recipePath": "ccpipe.toml", "tag": "hello",
    }  # fmt: skip
    source, base = bd["resolvedDependencies"]
    assert source["digest"] == {"gitCommit": result.commit}
    assert source["uri"] == f"git+file://{result.repository}@refs/heads/main"
    assert base["digest"] == {"sha256": result.image.base.manifest_digest.removeprefix("sha256:")}  # type: ignore[union-attr]
    assert base["uri"].startswith("oci:") and base["uri"].endswith(":busybox")
    assert bd["internalParameters"]["sourceDateEpoch"] == result.source_date_epoch
    assert bd["internalParameters"]["compression"].startswith("gzip zlib-ng ")
    rd = doc["predicate"]["runDetails"]
    assert rd["builder"] == {"id": BUILDER_ID_TEE_RUNNER}
    assert rd["metadata"] == {"invocationId": "wl-42", "startedOn": "2025-03-01T12:00:00Z",
                              "finishedOn": "2025-03-01T12:00:07Z"}  # fmt: skip


def test_digest_is_sha384_of_canonical_json(result: BuildResult) -> None:
    canonical = canonical_json(result.provenance)
    assert result.provenance_digest == hashlib.sha384(canonical).digest() == provenance_digest(result.provenance)
    assert result.report_data == result.provenance_digest + bytes(16)
    assert report_data(result.provenance) == result.report_data
    # a consumer that parses the JSON back gets the same digest
    again = Statement.model_validate_json(json.dumps(statement_json(result.provenance)))
    assert provenance_digest(again) == result.provenance_digest
    assert json.loads(canonical) == statement_json(result.provenance)


def test_built_event_accepts_it(result: BuildResult) -> None:
    from ccpipe.schemas.events import Evidence

    evidence = Evidence(
        tee="sample", backend="sample", emulated=True, evidence="", report_data=result.report_data.hex()
    )
    Built(
        image_digest=result.image_digest, layout=str(result.layout), provenance=statement_json(result.provenance),
        provenance_digest=result.provenance_digest_str, runner_evidence=evidence,
    )  # fmt: skip


def test_provenance_changes_with_the_run_but_the_image_does_not(
    make_repo: MakeRepo, busybox_layout: Path, tmp_path: Path, result: BuildResult
) -> None:
    repo = Path(result.repository)
    other = build_from_repo(repo, git(repo, "rev-parse", "HEAD"), tmp_path / "again", workload_id="wl-43",
                            bases=BaseSources(oci_roots=(busybox_layout.parent,)))  # fmt: skip
    assert other.image_digest == result.image_digest
    assert other.provenance_digest != result.provenance_digest


def _valid() -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "a" * 64}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {"buildType": CCPIPE_BUILD_TYPE, "externalParameters": {}},
            "runDetails": {"builder": {"id": "https://example/b"}},
        },
    }


@pytest.mark.parametrize(
    "path, value, needle",
    [
        (("_type",), "https://in-toto.io/Statement/v0.1", "_type"),
        (("predicateType",), "https://slsa.dev/provenance/v0.2", "predicateType"),
        (("subject",), [], "subject"),
        (("subject",), [{"name": "x", "uri": "u"}], "digest"),
        (("subject",), [{"name": "x", "digest": {"sha256": "XYZ"}}], "hex"),
        (("predicate", "buildDefinition", "surprise"), 1, "surprise"),
        (("predicate", "runDetails", "builder", "id"), None, "id"),
        (("predicate", "runDetails", "metadata"), {"startedOn": "2025-01-01T00:00:00"}, "time zone"),
    ],
)
def test_strict_schema(path: tuple[str, ...], value: Any, needle: str) -> None:
    doc = _valid()
    Statement.model_validate(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError, match=needle):
        Statement.model_validate(doc)


def test_models_are_frozen_and_need_an_identifier() -> None:
    s = Statement.model_validate(_valid())
    with pytest.raises(ValidationError):
        s.subject = []  # type: ignore[misc]
    with pytest.raises(ValidationError, match="at least one of uri, digest or content"):
        ResourceDescriptor(name="nothing")
