"""Helpers for the sign stage's handler tests: a real attested build, a recording KBS, events."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enclave_runner.tee import select_backend
from schemas.envelope import Event, Source
from schemas.events import AttestationVerified, Built, EventType
from stages.build.runner import attested_build
from tests.unit.stages.build.build_helpers import SPEC, git, hello_files

KBS_URL = "http://127.0.0.1:8080"


class RecordingKbs:
    """A :class:`~stages.sign.kbs.KbsRegistrar` that keeps what it is given, in order."""

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.resources: dict[str, bytes] = {}
        self.messages: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.fail_with = fail_with

    async def set_resource(self, path: str, data: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(f"resource:{path}")
        self.resources[path] = bytes(data)

    async def set_reference_values(self, message: Mapping[str, str]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append("reference-values")
        self.messages.append(dict(message))

    def reference_values(self) -> dict[str, list[Any]]:
        """The last registered RVPS sample message's payload."""
        msg = self.messages[-1]
        assert msg["version"] == "0.1.0" and msg["type"] == "sample"
        values: dict[str, list[Any]] = json.loads(base64.b64decode(msg["payload"]))
        return values


def make_built(root: Path, data_dir: Path, workload_id: str) -> Built:
    """Build a small repository (scratch base) with the emulated build runner; the ``built`` payload."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for rel, content in hello_files("scratch").items():
        if isinstance(content, tuple):
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(content)
    (repo / "ccpipe.toml").write_text(SPEC.format(base="scratch"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    backend = select_backend(data_dir, prefer="emulated-snp")
    out = data_dir / "images" / workload_id / "plain"
    return attested_build(repo, "refs/heads/main", out, backend=backend, workload_id=workload_id).built


def verified_for(built: Built, *, bound: bool = True) -> AttestationVerified:
    """An ``attestation.verified`` payload as the attestation service writes it for the build runner.

    ``bound=False``: evidence of another build (another report_data, another evidence digest).
    """
    raw = base64.b64decode(built.runner_evidence.evidence)
    rd = bytes.fromhex(built.runner_evidence.report_data)
    if not bound:
        raw, rd = raw + b" ", hashlib.sha384(b"another provenance").digest().ljust(64, b"\0")
    return AttestationVerified(
        tee=built.runner_evidence.tee,
        backend=built.runner_evidence.backend,
        emulated=True,
        evidence_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        claims={"report_data": rd.hex(), "measurement": "00" * 48},
        ear_status="affirming",
        purpose="build-runner",
    )


def event(workload_id: str, etype: EventType, payload: Any) -> Event:
    """An event of ``workload_id`` from a test source."""
    return Event(type=etype, workload_id=workload_id, source=Source(component="test"), payload=payload)
