"""At most one start per workload: the run claims in NATS KV (bucket ``CCPIPE_RUN_CLAIMS``).

The scheduler places a workload again when its node misses its heartbeats before the workload
runs; a node that was only slow (a loaded machine) is then still launching it. Whichever launch
reaches the start first claims the workload's key with a create (no previous revision) naming its
``scheduled`` event and the time; the other finds the key taken by another placement and does not
start while the workload runs or the claim is fresh, so a workload runs once and its
``workload.running`` and ``workload.exited`` are published once.

A claim is taken at the last moment before the start (keys are released, the image unpacked),
so a node that dies earlier leaves the workload to its next placement. A node that dies between
its claim and the start (``workload.running``) leaves a claim nobody follows: another placement
takes it over (compare-and-set) once it is older than the caller's ``take_over_after_s``. Every runner identity
may write the bucket (``ccpipe.pipeline.nats_auth``); ``ccpipe up``'s admin identity creates it.

Imports nats-py, the contract and the bucket's name from the NATS identities.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ccpipe.pipeline.bus import cluster_replicas
from ccpipe.pipeline.nats_auth import RUN_CLAIMS
from ccpipe.schemas.errors import TransientError

BUCKET = RUN_CLAIMS
"""One key per workload id; its value is the id of the ``scheduled`` event that started it."""
CLAIM_MAX_AGE_S = 30 * 24 * 3600.0
"""How long a claim is kept: far longer than any placement can be redelivered (the bucket stays bounded)."""


async def run_claims_bucket(js: JetStreamContext) -> KeyValue:
    """The claims bucket, created if absent (file storage: a claim outlives every restart)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=BUCKET, description="ccpipe: the placement that started each workload", history=1,
            ttl=CLAIM_MAX_AGE_S, storage=StorageType.FILE, replicas=cluster_replicas(js),
        ))


@dataclass(frozen=True)
class KvRunClaims:
    """Run claims over one node's JetStream connection."""

    js: JetStreamContext

    async def claim(self, workload_id: str, placement_id: str, take_over_after_s: float) -> bool:
        """True if the placement ``placement_id`` (a ``scheduled`` event id) may start ``workload_id``:
        it claimed the workload now, had claimed it before, or took over a claim another placement
        took more than ``take_over_after_s`` ago (its node died between the claim and the start: the
        caller asks only while the workload has not started). Raises :class:`TransientError` when
        NATS does not answer (the launch then fails, never starts unclaimed)."""
        mine = json.dumps({"placement": placement_id, "at": time.time()}).encode()
        try:
            kv = await run_claims_bucket(self.js)
            try:
                await kv.create(workload_id, mine)
                return True
            except KeyWrongLastSequenceError:
                entry = await kv.get(workload_id)
            held = _claim_of(entry.value or b"")
            if held.get("placement") == placement_id:
                return True
            if time.time() - float(held.get("at", 0.0)) <= take_over_after_s:
                return False
            try:
                await kv.update(workload_id, mine, last=entry.revision)
                return True
            except KeyWrongLastSequenceError:  # another placement took it over first
                return False
        except (NatsError, OSError) as exc:
            raise TransientError(f"claiming the start of {workload_id} in KV bucket {BUCKET} failed: {exc!r}",
                                 code="runner.claim.unreachable") from exc


def _claim_of(value: bytes) -> dict[str, Any]:
    """A stored claim (``{"placement", "at"}``); one that does not parse counts as taken long ago."""
    try:
        held = json.loads(value)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


__all__ = ["BUCKET", "CLAIM_MAX_AGE_S", "KvRunClaims", "run_claims_bucket"]
