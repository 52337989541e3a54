"""Node inventory, pure core: what a runner announces, and which nodes fit a workload.

An enclave runner announces a :class:`NodeAnnouncement` (its TEE, evidence backend, TCB,
capacity and labels, signed with its attested node key) and repeats it as a heartbeat;
:mod:`ccpipe.stages.deploy.inventory_kv` keeps those in a NATS KV bucket with a TTL, and
:mod:`ccpipe.stages.deploy.admission` replaces the TEE claims with what the node's attestation verified.
This module only judges them: :func:`unfit_reason`
says why a node cannot take a workload (or ``None`` when it can), by the workload's
:meth:`~ccpipe.schemas.workload.TeeRequirements.unmet` (the check the KBS makes too).

No NATS here; imports ``schemas`` only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.nodes import NODE_ID_PATTERN, NodeId, heartbeat_message
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements

_NODE_ID_RE = re.compile(NODE_ID_PATTERN)


class Capacity(BaseModel):
    """How many workloads a node can run in total, and how many more right now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int = Field(ge=0, description="Workload slots the node has.")
    free: int = Field(ge=0, description="Slots not in use, as the node counts them.")

    @model_validator(mode="after")
    def _free_within_total(self) -> Capacity:
        if self.free > self.total:
            raise ValueError(f"free ({self.free}) exceeds total ({self.total})")
        return self


class NodeAnnouncement(BaseModel):
    """What a runner says about itself in the ``CCPIPE_NODES`` bucket (its key is ``node_id``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: NodeId = Field(description="Unique node id; the KV key.")
    tee: TeeType = Field(description="The TEE the node launches enclaves in.")
    backend: str = Field(description="Evidence backend: configfs-tsm, sev-guest, emulated, sample.")
    emulated: bool = Field(description="True when no hardware TEE backs the node (development only).")
    tcb: dict[str, int] = Field(
        default_factory=dict, description="TCB component versions (SVNs), e.g. {snp = 22, microcode = 213}."
    )
    capacity: Capacity = Field(description="Workload slots, total and free.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels (zone, host…).")
    heartbeat_at: datetime | None = Field(default=None, description="When this heartbeat was sent (UTC).")
    ttl_s: float | None = Field(default=None, gt=0, description="The node is gone if not heard from for this long.")
    sent_at: datetime | None = Field(
        default=None, description="When the node signed this heartbeat (its clock; kept, unlike heartbeat_at).")
    signature: str | None = Field(
        default=None, description="Base64url Ed25519 signature by the attested node key over heartbeat_message().")

    def signed_message(self) -> bytes | None:
        """What :attr:`signature` covers (node id, ``sent_at``, capacity), or None before it is signed."""
        if self.sent_at is None:
            return None
        return heartbeat_message(self.node_id, self.sent_at, self.capacity.total, self.capacity.free)

    def to_json(self) -> bytes:
        """The bytes stored in the KV bucket."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes, *, key: str = "?") -> NodeAnnouncement:
        """Parse a stored announcement; raises :class:`InvalidInput` naming the key."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise InvalidInput(
                f"node announcement {key!r} is malformed: {loc}: {first['msg']}",
                hint="the runner publishing it is outdated or broken; restart it",
                code="deploy.node.invalid",
            ) from exc

    def stale(self, now: datetime | None = None, grace_s: float = 1.0) -> bool:
        """True when the heartbeat is older than its TTL (a server that ignored the TTL kept it)."""
        if self.heartbeat_at is None or self.ttl_s is None:
            return False
        age = ((now or datetime.now(UTC)) - self.heartbeat_at).total_seconds()
        return age > self.ttl_s + grace_s


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if valid; raises :class:`InvalidInput` otherwise."""
    if not _NODE_ID_RE.match(node_id):
        raise InvalidInput(
            f"node id {node_id!r} is not valid",
            hint="use lower-case letters, digits, '.', '_' and '-', 1 to 63 characters",
            code="deploy.node.id_invalid",
        )
    return node_id


def effective_allow_emulated(requirements: TeeRequirements, allow_emulated: bool) -> bool:
    """Emulated nodes are acceptable only if both the workload and the deployment allow them."""
    return requirements.allow_emulated and allow_emulated


def unfit_reason(
    node: NodeAnnouncement, requirements: TeeRequirements, *, allow_emulated: bool, free: int | None = None
) -> str | None:
    """Why ``node`` cannot take a workload with ``requirements`` now, or ``None`` if it can.

    ``allow_emulated`` is the deployment's setting (combined with the workload's own);
    ``free`` overrides the node's announced free slots (the scheduler subtracts placements the
    node has not counted yet).
    """
    unmet = requirements.unmet(node.tee, emulated=node.emulated, tcb=node.tcb,
                               installation_allows_emulated=allow_emulated)
    if unmet is not None:
        return unmet.message
    slots = node.capacity.free if free is None else free
    if slots <= 0:
        return "no free capacity"
    return None


def wanted_summary(requirements: TeeRequirements, *, allow_emulated: bool) -> dict[str, object]:
    """The requirement as a ``scheduling.pending`` event shows it."""
    return {
        "tee_types": [t.value for t in requirements.types],
        "min_tcb": dict(requirements.min_tcb),
        "allow_emulated": effective_allow_emulated(requirements, allow_emulated),
    }


__all__ = [
    "Capacity",
    "NodeAnnouncement",
    "NodeId",
    "check_node_id",
    "effective_allow_emulated",
    "unfit_reason",
    "wanted_summary",
]
