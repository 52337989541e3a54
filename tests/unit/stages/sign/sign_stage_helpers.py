"""Helpers for the sign stage's handler tests: a real attested build, a recording KBS, events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.pipeline.reader import read_events
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.events import AttestationVerified, Built, EventType, Submitted
from ccpipe.schemas.workload import parse_workload_spec
from ccpipe.stages.build.runner import attested_build
from tests.unit.stages.build.build_helpers import SPEC, git, hello_files

KBS_URL = "http://127.0.0.1:8080"


class MemoryMarkers:
    """The sign stage's marker store in a dict (one process), with the KV bucket's create/CAS rules."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self._revision = 0

    async def create(self, key: str, value: bytes) -> int | None:
        if key in self.values:
            return None
        self._revision += 1
        self.values[key] = (value, self._revision)
        return self._revision

    async def get(self, key: str) -> tuple[bytes, int] | None:
        return self.values.get(key)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        if key not in self.values or self.values[key][1] != revision:
            return None
        self._revision += 1
        self.values[key] = (value, self._revision)
        return self._revision


class RecordingKbs:
    """A :class:`~ccpipe.stages.sign.kbs.KbsRegistrar` that keeps what it is given, in order."""

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


def commit_repo(repo: Path, files: Mapping[str, bytes | tuple[str, str]] | None = None) -> str:
    """A new git repository at ``repo`` with one commit of ``files`` (default: the demo workload, scratch base).

    ``("link", target)`` entries become symlinks. Returns the commit id.
    """
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for rel, content in (files if files is not None else hello_files("scratch")).items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_bytes(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return git(repo, "rev-parse", "HEAD")


def submitted(workload_id: str, repo: Path, commit: str, spec_text: str = SPEC.format(base="scratch")) -> Event:
    """The ``submitted`` event of a push of ``commit`` to ``refs/heads/main``."""
    payload = Submitted(
        repo=str(repo), ref="refs/heads/main", old_commit="0" * 40, new_commit=commit, pusher="t",
        spec=parse_workload_spec(spec_text),
    )  # fmt: skip
    return event(workload_id, EventType.SUBMITTED, payload)


async def first_event(js: JetStreamContext, workload_id: str, types: Collection[EventType],
                      timeout: float = 90.0) -> Event:  # fmt: skip
    """The workload's first stored event of one of ``types``; fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for stored in await read_events(js, workload_id):
            if stored.event and stored.event.type in types:
                return stored.event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {', '.join(t.value for t in types)} event for {workload_id}")


async def wait_for(js: JetStreamContext, workload_id: str, etype: EventType, timeout: float = 90.0) -> Event:
    """The workload's ``etype`` event; fails at once if the workload failed or its attestation was rejected."""
    found = await first_event(js, workload_id, {etype, EventType.FAILED, EventType.ATTESTATION_REJECTED}, timeout)
    assert found.type == etype, found.payload
    return found


def make_built(root: Path, data_dir: Path, workload_id: str) -> Built:
    """Build a small repository (scratch base) with the emulated build runner; the ``built`` payload."""
    repo = root / "repo"
    commit_repo(repo, {k: v for k, v in hello_files("scratch").items() if not isinstance(v, tuple)})
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
