"""Which heartbeating nodes may receive work, pure core: only attested nodes, by their verified facts.

A node is in the inventory the scheduler places on only when

* the attestation service holds a record for it (:class:`~ccpipe.schemas.nodes.NodeAttestation`,
  written when its TEE evidence binding its node key verified), and
* its heartbeat carries a valid Ed25519 signature by that recorded key over its node id, the
  time it was sent and its capacity, and was not signed before one already seen from the node
  (an old heartbeat written again is a replay; the node's clock may be skewed, so only the
  order of its own times counts).

The admitted node carries the record's TEE type, backend (``hardware`` or ``emulated``),
emulation flag and TCB in place of what its heartbeat claims; only its capacity, labels and
liveness come from the heartbeat. Everything else is a :class:`Refusal`, which
:class:`NodeGate` counts and logs without flooding (a node heartbeats every second).

No NATS here; imports ``schemas``, ``crypto`` and :mod:`ccpipe.stages.deploy.inventory`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ccpipe.crypto import ed25519, jose
from ccpipe.schemas.nodes import NodeAttestation
from ccpipe.stages.deploy.inventory import NodeAnnouncement

LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Refusal:
    """A heartbeat the scheduler ignores, and why."""

    node_id: str
    reason: str


def _b64url(text: str) -> bytes | None:
    try:
        return jose.b64url_decode(text)
    except ValueError:
        return None


def admit(heartbeat: NodeAnnouncement, record: NodeAttestation | None,
          newest_seen: datetime | None = None) -> NodeAnnouncement | Refusal:
    """The node as the scheduler may use it (verified TEE facts), or why its heartbeat is ignored.

    ``newest_seen`` is the latest ``sent_at`` of this node's heartbeats admitted before: one
    signed earlier is a replay.
    """
    node_id = heartbeat.node_id
    if record is None or record.node_id != node_id:
        return Refusal(node_id, "the node has not attested (no attestation record)")
    message = heartbeat.signed_message()
    signature = _b64url(heartbeat.signature) if heartbeat.signature else None
    if message is None or signature is None or heartbeat.sent_at is None:
        return Refusal(node_id, "the heartbeat is not signed")
    key = _b64url(record.node_key)
    if key is None or not ed25519.verify(key, message, signature):
        return Refusal(node_id, "the heartbeat is not signed by the node's attested key")
    if newest_seen is not None and heartbeat.sent_at < newest_seen:
        return Refusal(node_id, "the heartbeat is older than one already seen (a replay)")
    return heartbeat.model_copy(update={"tee": record.tee, "backend": record.backend, "emulated": record.emulated,
                                        "tcb": dict(record.tcb)})


@dataclass
class NodeGate:
    """Admits heartbeats (:func:`admit`) across listings: remembers each node's newest heartbeat and its refusals.

    Refusals are counted per node (:attr:`counts`) and logged when a node's reason changes,
    otherwise at most once per ``interval_s``: a node heartbeats every second and the scheduler
    lists twice as often, so one log line per listing would flood the log.
    """

    logger: logging.Logger
    interval_s: float = LOG_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    counts: Counter[str] = field(default_factory=Counter)
    """Refused listings of each node's heartbeat since this gate was made."""
    newest: dict[str, datetime] = field(default_factory=dict)
    _logged: dict[str, tuple[str, float, int]] = field(default_factory=dict)

    def admit(self, heartbeats: Iterable[NodeAnnouncement],
              records: Mapping[str, NodeAttestation]) -> list[NodeAnnouncement]:
        """The admitted nodes among ``heartbeats``, by the records of ``records`` (keyed by node id)."""
        admitted: list[NodeAnnouncement] = []
        refused: list[Refusal] = []
        for heartbeat in heartbeats:
            outcome = admit(heartbeat, records.get(heartbeat.node_id), self.newest.get(heartbeat.node_id))
            if isinstance(outcome, Refusal):
                refused.append(outcome)
                continue
            if outcome.sent_at is not None:
                self.newest[outcome.node_id] = outcome.sent_at
            admitted.append(outcome)
        self._record(refused)
        return admitted

    def _record(self, refusals: list[Refusal]) -> None:
        now = self.clock()
        for refusal in refusals:
            self.counts[refusal.node_id] += 1
            last = self._logged.get(refusal.node_id)
            if last is not None and last[0] == refusal.reason and now - last[1] < self.interval_s:
                continue
            since = self.counts[refusal.node_id] - (last[2] if last else 0)
            self.logger.warning("ignoring node %s: %s (%d heartbeat listing(s) refused)", refusal.node_id,
                                refusal.reason, since)
            self._logged[refusal.node_id] = (refusal.reason, now, self.counts[refusal.node_id])


__all__ = ["NodeGate", "Refusal", "admit"]
