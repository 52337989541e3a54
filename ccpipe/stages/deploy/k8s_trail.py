"""Make a workload's Kubernetes manifest from what its events say (``ccpipe k8s manifest``).

From the trail: the name (``submitted``), the pushed image by digest (``pushed``), the initdata
digest the pipeline derived its reference values from (``signed``) and, when it was
scheduled, the TEE of the chosen node (``scheduled``). The initdata is made with
:func:`ccpipe.evidence.initdata.make_initdata` (KBS URL, image signature policy, image);
when its digest differs from the one in ``signed`` a warning says so, because the KBS would
then refuse the key to the enclave (its reference values name the other digest).

Pure but for :func:`write_manifest`, which the ``schedule`` step calls when
``CCPIPE_K8S_MANIFEST_DIR`` is set: events in, manifest out.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpipe.evidence.initdata import initdata_digest, make_initdata
from ccpipe.schemas.envelope import Event
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Signed, Submitted
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.deploy.k8s import WorkloadManifest, workload_manifest

DEFAULT_IMAGE_POLICY = "kbs:///default/security-policy/ccpipe"
"""Where the guest fetches its containers-policy.json (the KBS resource the pipeline keeps it in)."""


@dataclass(frozen=True)
class ManifestResult:
    """The manifest, and what a person should know about it."""

    manifest: dict[str, Any]
    initdata: str
    warnings: tuple[str, ...]


def _latest(events: list[Event], etype: EventType) -> Event | None:
    found = [e for e in events if e.type == etype]
    return found[-1] if found else None


def manifest_from_events(
    workload_id: str,
    events: list[Event],
    *,
    kbs_url: str,
    kind: str = "Pod",
    replicas: int = 1,
    image_policy: str = DEFAULT_IMAGE_POLICY,
    registry: str | None = None,
    tee: TeeType | None = None,
    emulated: bool | None = None,
    namespace: str | None = None,
    registered_initdata: bool = True,
) -> ManifestResult:
    """The manifest of ``workload_id`` from its events.

    ``registry`` replaces the pushed registry host in the image (a cluster often reaches the
    registry under another name); ``tee`` / ``emulated`` override what ``scheduled`` said (or,
    unscheduled, the spec's first TEE type). With ``registered_initdata`` the initdata is the
    exact document the sign stage registered with the KBS (recorded in ``signed``), so the
    guest's key release matches; otherwise (the cluster reaches the KBS or registry under other
    names) it is made here and a digest mismatch is warned about. Raises :class:`InvalidInput` when the workload
    was not submitted or not pushed yet, or an option is invalid.
    """
    submitted, pushed = _latest(events, EventType.SUBMITTED), _latest(events, EventType.PUSHED)
    if submitted is None or not isinstance(submitted.payload, Submitted):
        raise InvalidInput(f"workload {workload_id} has no submitted event", hint="check the id with 'ccpipe events'",
                           code="deploy.k8s.unknown_workload")
    if pushed is None or not isinstance(pushed.payload, Pushed):
        raise InvalidInput(f"workload {workload_id} has not been pushed to a registry yet",
                           hint="wait for its pushed event ('ccpipe status WORKLOAD')", code="deploy.k8s.not_pushed")
    spec, push = submitted.payload.spec, pushed.payload
    warnings: list[str] = []
    scheduled = _latest(events, EventType.SCHEDULED)
    if tee is None and scheduled is not None and isinstance(scheduled.payload, Scheduled):
        tee = scheduled.payload.tee
        if emulated is None:
            emulated = scheduled.payload.backend == "emulated"
    if tee is None:
        tee = spec.tee.types[0]
        warnings.append(f"not scheduled yet: using the spec's first TEE type {tee.value}")
    if tee not in spec.tee.types:
        allowed = ", ".join(t.value for t in spec.tee.types)
        warnings.append(f"TEE {tee.value} is not one the workload allows ({allowed})")
    emulated = bool(emulated) or tee == TeeType.SAMPLE
    if emulated and not spec.tee.allow_emulated:
        warnings.append("the workload does not allow emulated TEEs; its key will not be released there")
    image = f"{registry or push.registry}/{push.repository}@{push.image_digest}"
    signed = _latest(events, EventType.SIGNED)
    signed_payload = signed.payload if signed is not None else None
    if registered_initdata and isinstance(signed_payload, Signed) and signed_payload.initdata:
        initdata = signed_payload.initdata
    else:
        initdata = make_initdata(kbs_url, push.image_digest, image_policy, image=image)
    if isinstance(signed_payload, Signed) and initdata_digest(initdata).hex() != signed_payload.initdata_digest:
        warnings.append(
            "the initdata made here does not have the digest the sign stage registered "
            f"({signed_payload.initdata_digest[:16]}…); check --kbs-url and --image-policy"
        )
    manifest = workload_manifest(WorkloadManifest(
        name=spec.workload.name, workload_id=workload_id, image=image, tee=tee, emulated=emulated,
        initdata=initdata, kind=kind, replicas=replicas, namespace=namespace,
    ))
    return ManifestResult(manifest, initdata, tuple(warnings))


def write_manifest(directory: Path, workload_id: str, result: ManifestResult) -> Path:
    """Write ``<directory>/<workload_id>.json`` atomically (a reader never sees half a manifest)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{workload_id}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{workload_id}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result.manifest, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
