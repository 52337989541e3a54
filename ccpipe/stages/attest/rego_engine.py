"""Rego modules compiled once into a rego-cpp bundle and evaluated per input, through regopy's
public API only (``Interpreter``, ``Input``, ``build``/``save_bundle``/``query_bundle``).

An engine holds one native interpreter (about 1.4 MB). Engines are shared in one bounded LRU
keyed by the module texts, the query and the part of ``data`` the plan reads
(:mod:`ccpipe.stages.attest.policy_reads`): a resource policy that reads only ``data.plugin``
gets one engine for every resource path, not one per path. When the plan's reads cannot be
bounded, the whole ``data`` is part of the key.

Decisions are memoised (:mod:`ccpipe.stages.attest.policy_memo`) on the projection of the input
(and ``data``) onto what the plan reads, when that is bounded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import subprocess
import sys
import threading
from collections import OrderedDict
from typing import Any

import regopy

from ccpipe.stages.attest.policy_memo import DECISIONS, DecisionKeys
from ccpipe.stages.attest.policy_reads import NotProjectable, PolicyReads, canonical, plan_reads, project
from ccpipe.stages.attest.rego_first import rego_loaded_late

ENGINE_CACHE_SIZE = 32
"""Compiled engines kept at once (each is a native interpreter of about 1.4 MB)."""

PLAN_TIMEOUT_S = 60
"""How long reading a compiled plan may take before its reads count as unbounded."""

Modules = tuple[tuple[str, str], ...]
"""Rego modules compiled together: (file name, text)."""


_PLAN_SCRIPT = """
import json, sys, tempfile, regopy
req = json.load(sys.stdin)
interp = regopy.Interpreter()
for name, text in req["modules"]:
    interp.add_module(name, text)
interp.add_data_json(req["data"])
bundle = interp.build(req["query"])
with tempfile.TemporaryDirectory() as tmp:
    interp.save_bundle(tmp + "/bundle", bundle)
    with open(tmp + "/bundle/plan.json", encoding="utf-8") as f:
        sys.stdout.write(f.read())
"""


def plan_of(modules: Modules, query: str, data_json: str) -> PolicyReads:
    """What the compiled plan of ``modules`` for ``query`` reads (see :func:`plan_reads`).

    The plan is what regopy's ``save_bundle`` writes in JSON form. That writer aborts with
    "free(): invalid size" in a process where libstdc++ was loaded before rego-cpp (after
    ``import frozenlist``, as aiohttp does: the two then free with each other's allocator, see
    :mod:`ccpipe.stages.attest.rego_first`), so it runs in a child interpreter that holds nothing
    else, whatever the caller loaded first; if the child fails, the reads are unbounded and
    nothing is cached.
    """
    request = json.dumps({"modules": modules, "query": query, "data": data_json})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PLAN_SCRIPT],
            input=request, capture_output=True, text=True, timeout=PLAN_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return PolicyReads(None, None, f"the compiled plan could not be read: {exc}")
    if done.returncode != 0:
        return PolicyReads(None, None, f"the compiled plan could not be read: {done.stderr.strip()[-200:]}")
    try:
        plan = json.loads(done.stdout)
    except ValueError as exc:
        return PolicyReads(None, None, f"the compiled plan is not JSON: {exc}")
    return plan_reads(plan)


@functools.cache  # said once per process
def _say_if_loaded_late() -> None:
    if rego_loaded_late():
        logging.getLogger("ccpipe.rego").warning(
            "rego-cpp was loaded after libstdc++ (another library loaded it first): every Rego "
            "evaluation leaks memory in this process; call "
            "ccpipe.stages.attest.rego_first.load_rego_first() before importing anything else")


class CompiledRego:
    """Modules and ``data`` compiled into a bundle for one query; :meth:`evaluate` runs it."""

    def __init__(
        self, modules: Modules, query: str, data: dict[str, Any], reads: PolicyReads | None = None
    ) -> None:
        """Compile; ``reads`` is what the plan reads when already known for these modules and query.

        Raises whatever regopy raises for Rego that does not parse or compile, and ``ValueError``
        when the bundle is not built.
        """
        _say_if_loaded_late()
        self._lock = threading.Lock()
        self._interp = regopy.Interpreter()
        for name, text in modules:
            self._interp.add_module(name, text)
        data_json = json.dumps(data, sort_keys=True)
        self._interp.add_data_json(data_json)
        self._bundle = self._interp.build(query)
        if not self._bundle.ok():
            raise ValueError("the Rego bundle was not built")
        self.reads: PolicyReads = reads if reads is not None else plan_of(modules, query, data_json)
        self.decisions = DecisionKeys(query, [text for _, text in modules], data_key(self.reads, data))

    def evaluate(self, doc: dict[str, Any]) -> tuple[str, bytes | None]:
        """The engine's output text for input ``doc`` (memoised, or just computed) and the memo
        key to store it under once the caller accepts it (None: already stored, or never)."""
        key = self.decisions.key(doc, self.reads.input if self.reads.memoisable else None)
        if key is not None:
            out = DECISIONS.get(key)
            if out is not None:
                return out, None
        inp = regopy.Input(doc)  # converted outside the lock: only the query needs the engine
        with self._lock:
            self._interp.set_input(inp)
            return str(self._interp.query_bundle(self._bundle)), key


def data_key(reads: PolicyReads, data: dict[str, Any]) -> str:
    """What of ``data`` an engine depends on: its projection onto the plan's reads, else all of it."""
    if reads.memoisable:
        try:
            return canonical(project(data, reads.data)).decode("utf-8", "surrogatepass")
        except NotProjectable:
            pass
    return "whole:" + json.dumps(data, sort_keys=True)


class EngineCache:
    """A bounded LRU of compiled engines, keyed by module texts, query and the ``data`` they read."""

    def __init__(self, size: int = ENGINE_CACHE_SIZE) -> None:
        """An empty cache of at most ``size`` engines."""
        self.size = size
        self._lock = threading.Lock()
        self._engines: OrderedDict[tuple[str, str], CompiledRego] = OrderedDict()
        self._reads: OrderedDict[str, PolicyReads] = OrderedDict()

    def get(self, modules: Modules, query: str, data: dict[str, Any]) -> CompiledRego:
        """The engine for ``modules`` answering ``query`` over ``data``, compiled on first use.

        Raises what :class:`CompiledRego` raises.
        """
        h = hashlib.sha256()
        for part in (query, *(p for m in modules for p in m)):
            raw = part.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "big") + raw)
        digest = h.hexdigest()
        with self._lock:
            reads = self._reads.get(digest)
        if reads is not None:
            key = (digest, data_key(reads, data))
            with self._lock:
                hit = self._engines.get(key)
                if hit is not None:
                    self._engines.move_to_end(key)
                    return hit
        engine = CompiledRego(modules, query, data, reads)
        key = (digest, data_key(engine.reads, data))
        with self._lock:
            self._reads[digest] = engine.reads
            self._engines[key] = engine
            self._engines.move_to_end(key)
            while len(self._engines) > self.size:
                self._engines.popitem(last=False)
            while len(self._reads) > 4 * self.size:
                self._reads.popitem(last=False)
        return engine

    def clear(self) -> None:
        """Drop every engine."""
        with self._lock:
            self._engines.clear()
            self._reads.clear()

    def __len__(self) -> int:
        """How many engines are held."""
        return len(self._engines)


ENGINES = EngineCache()
"""The process's compiled engines, shared by every policy (the key names the modules)."""

__all__ = ["ENGINES", "ENGINE_CACHE_SIZE", "CompiledRego", "EngineCache", "Modules", "data_key", "plan_of"]
