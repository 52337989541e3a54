"""A bounded memo of Rego policy decisions, keyed on exactly what a decision depends on.

A decision is a deterministic function of the policy's modules, the parts of ``data`` and of
``input`` its compiled plan reads (:mod:`ccpipe.stages.attest.policy_reads`). The key of a
decision is the SHA-256 of (a digest of the query, the module texts and the ``data`` read, the
canonical JSON of the input's projection onto the paths read). Per KBS handshake the input differs only in values
bound to that handshake (report_data, nonce, keys, token times, evidence digest), which the
shipped policies never read — so the second handshake of a workload reuses the first's decision
instead of converting ~135 claim nodes and querying the engine again.

Nothing is memoised for a policy whose reads cannot be bounded (see
:func:`~ccpipe.stages.attest.policy_reads.plan_reads`), for an input that has no exact canonical form, or
for an evaluation that failed. Entries hold only the engine's output text (immutable).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ccpipe.stages.attest.policy_reads import NotProjectable, Trie, canonical, project

DEFAULT_SIZE = 4096
_DOMAIN = b"ccpipe policy decision memo v2\0"


class DecisionMemo:
    """A thread-safe LRU of decision key → engine output text."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        """An empty memo of at most ``size`` decisions (0: memoise nothing)."""
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, str] = OrderedDict()
        self.size = size
        self.hits = 0
        self.misses = 0

    def configure(self, size: int) -> None:
        """Bound the memo to ``size`` decisions (0 disables it); evicts what no longer fits."""
        with self._lock:
            self.size = max(0, size)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every decision and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def get(self, key: bytes) -> str | None:
        """The output stored under ``key``, or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: bytes, output: str) -> None:
        """Store ``output`` under ``key`` (evicting the least recently used beyond the bound)."""
        with self._lock:
            if self.size <= 0:
                return
            self._entries[key] = output
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        """How many decisions are held."""
        return len(self._entries)


DECISIONS = DecisionMemo()
"""The process's memo, shared by every compiled policy (the key names the policy)."""


class DecisionKeys:
    """Memo keys for one compiled policy: its modules and data fixed, the input varying."""

    def __init__(self, query: str, modules: Sequence[str], data_key: str) -> None:
        """Keys for ``modules`` (every Rego module compiled together) answering ``query`` over
        the ``data`` that ``data_key`` stands for."""
        h = hashlib.sha256(_DOMAIN)
        # Length-prefixed parts: no two different (query, modules, data) share a prefix.
        for part in (query, *modules, data_key):
            raw = part.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "big"))
            h.update(raw)
        self._prefix = h.digest()

    def key(self, doc: Any, reads: Trie, memo: DecisionMemo = DECISIONS) -> bytes | None:
        """The memo key of evaluating on input ``doc`` of which the policy reads ``reads``; None
        when it must not be memoised (``reads`` is None: the reads are not bounded)."""
        if reads is None or memo.size <= 0:
            return None
        try:
            projected = canonical(project(doc, reads))
        except (NotProjectable, RecursionError):
            return None
        return hashlib.sha256(self._prefix + projected).digest()


__all__ = ["DECISIONS", "DEFAULT_SIZE", "DecisionKeys", "DecisionMemo"]
