"""The architecture DESIGN.md states ("Layout", "Across machines"), checked on the import graph.

grimp builds the graph of ``ccpipe`` once per session. It counts every import: at module
level, inside functions (lazy) and under ``TYPE_CHECKING`` (type-only), because a loop or a
wrong-way dependency hidden in a function or a type annotation is still one: the modules
cannot be understood, tested or moved apart.

Each rule is a function from the graph to a list of violations, each naming the import chain
(importer, imported, line), so a failure says what to change. The last tests plant
violations into a copy of the graph and check that every rule reports them: the checker can
fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise

import grimp
import pytest

PACKAGE = "ccpipe"
SCHEMAS = "ccpipe.schemas"
"""The contract: imports nothing of the project outside itself."""
STAGES = "ccpipe.stages"
RUNNER = "ccpipe.enclave_runner"
SHARED = ("ccpipe.crypto", "ccpipe.evidence", "ccpipe.oci")
"""Capabilities several parts use, each with one home (JOSE and Ed25519, evidence formats, OCI
layout and registry): pure cores that import only the contract and each other."""
TOP_LEVEL = {"ccpipe.__main__", "ccpipe.pipeline", STAGES, RUNNER, SCHEMAS, *SHARED}
AUDIT = "ccpipe.pipeline.audit"
"""The audit trail: reads the stream, verifies it, answers queries. Uses the runtime."""
RUNTIME = (
    "ccpipe.pipeline",  # the package itself (a docstring)
    "ccpipe.pipeline.settings",  # configuration from the environment
    "ccpipe.pipeline.bus",  # NATS connection, stream provisioning, publishing
    "ccpipe.pipeline.nats_auth",  # each component's NATS identity: permissions, credentials, TLS
    "ccpipe.pipeline.runtime",  # the stage runtime: consume, retry, publish, ack, dead-letter
    "ccpipe.pipeline.stagehost",  # runs stage specs on a broker
    "ccpipe.pipeline.reader",  # reads events back from the stream
    "ccpipe.pipeline.servers",  # the embedded nats-server and registry
    "ccpipe.pipeline.registry_gc",  # removing images from the embedded registry (admin deletes, garbage collection)
    "ccpipe.pipeline.services",  # what runs where (endpoints)
    "ccpipe.pipeline.event_signature",  # the signature a component puts on its events
    "ccpipe.pipeline.signing",  # a component's signer and its key registration
    "ccpipe.pipeline.event_trust",  # whether an event may be acted on: signer, emitter, subject
    "ccpipe.pipeline.enrolment",  # admin-signed enrolments of component keys, and the admin key
    "ccpipe.pipeline.enrolment_bus",  # the enrolment bucket, and the mirror that keeps a host's keyring
    "ccpipe.pipeline.artifacts",  # layouts handed between stages by digest (sealed where plaintext)
    "ccpipe.pipeline.source_bundles",  # the pushed commit, packed and sealed to the build stage, by digest
    "ccpipe.pipeline.store_names",  # names of the stores ``ccpipe submit`` uses, loading nothing
    "ccpipe.pipeline.keyfiles",  # private key files
    "ccpipe.pipeline.children",  # child processes that die with their parent
    "ccpipe.pipeline.periodic",  # a service's rounds, as a task while its block is open
    "ccpipe.pipeline.locks",  # lock files that name their holder
    "ccpipe.pipeline.ports",  # the embedded services' stable ports
    "ccpipe.pipeline.trigger",  # the git trigger: a push becomes ``submitted``
    "ccpipe.pipeline.quick_submit",  # ``ccpipe submit`` of a valid push without the models (the hook's cost)
    "ccpipe.pipeline.light_nats",  # the blocking NATS client of that path (nats-py's import is most of its cost)
    "ccpipe.pipeline.telemetry",  # metrics, traces and health, imported by the runtime
    "ccpipe.pipeline.telemetry.metrics",  # the Prometheus metric families
    "ccpipe.pipeline.telemetry.tracing",  # OpenTelemetry spans and traceparent propagation
    "ccpipe.pipeline.telemetry.health",  # readiness: the NATS connections a process holds open
    "ccpipe.pipeline.telemetry.http",  # /metrics, /healthz, /readyz and their listener
)
"""The backbone every stage and the runner import: it imports no stage, no runner, no audit trail
and no assembly."""
ASSEMBLY = ("ccpipe.__main__", "ccpipe.pipeline.app", "ccpipe.pipeline.asyncapi", "ccpipe.pipeline.cli")
"""Wires everything together (``python -m ccpipe``, the CLI, which stages and services run):
imports everything, imported by nothing outside itself."""
HANDLER_NAMES = ("handler", "http")
"""Last name of a stage's handler modules, besides services (``service``, ``*_service``): the
modules that receive events or requests and drive a pure core."""


def _is_handler(module: str) -> bool:
    name = module.rsplit(".", 1)[-1]
    return module.startswith(STAGES + ".") and (name in HANDLER_NAMES or name.endswith("service"))


def handler_modules(graph: grimp.ImportGraph) -> set[str]:
    """Every stage's handler modules: ``handler``, ``http`` and ``*service`` modules under ``ccpipe.stages``."""
    return {m for m in graph.modules if _is_handler(m)}


def _within(graph: grimp.ImportGraph, *packages: str) -> set[str]:
    """``packages`` and all their descendants (those present in the graph)."""
    out: set[str] = set()
    for p in packages:
        if p in graph.modules:
            out |= {p} | graph.find_descendants(p)
    return out


def _hop(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    where = "; ".join(f"line {d['line_number']}: {d['line_contents'].strip()}" for d in details)
    return f"{importer} -> {imported}" + (f" ({where})" if where else "")


def describe(graph: grimp.ImportGraph, chain: Iterable[str]) -> str:
    """One import chain, hop by hop with the line that makes each import."""
    return "\n      then ".join(_hop(graph, a, b) for a, b in pairwise(chain))


def forbidden_chains(graph: grimp.ImportGraph, importers: Iterable[str], forbidden: set[str]) -> list[str]:
    """Chains from any of ``importers`` into ``forbidden`` (module names).

    One chain per import that crosses into ``forbidden`` (the shortest from an importer that
    reaches it), so a single wrong import is reported once, not once per module behind it.
    """
    crossings: dict[tuple[str, str], tuple[str, ...]] = {}
    for importer in sorted(importers):
        for target in sorted(forbidden):
            chain = graph.find_shortest_chain(importer=importer, imported=target)
            if chain is None or any(m in forbidden for m in chain[:-1]):
                continue  # no chain, or it enters the forbidden set earlier (reported there)
            edge = (chain[-2], chain[-1])
            if edge not in crossings or len(chain) < len(crossings[edge]):
                crossings[edge] = chain
    return [describe(graph, c) for _, c in sorted(crossings.items())]


# The rules -----------------------------------------------------------------------------------


def schemas_violations(graph: grimp.ImportGraph) -> list[str]:
    """Imports from ``ccpipe.schemas`` to anything of the project outside it."""
    inside = _within(graph, SCHEMAS)
    return forbidden_chains(graph, inside, set(graph.modules) - inside)


def runtime_violations(graph: grimp.ImportGraph) -> list[str]:
    """Chains from the runtime to a stage, the runner, the audit trail or the assembly."""
    runtime = {m for m in RUNTIME if m in graph.modules}
    return forbidden_chains(graph, runtime, _within(graph, STAGES, RUNNER, AUDIT, *ASSEMBLY))


def audit_violations(graph: grimp.ImportGraph) -> list[str]:
    """Chains from the audit trail to a stage, the runner or the assembly."""
    return forbidden_chains(graph, _within(graph, AUDIT), _within(graph, STAGES, RUNNER, *ASSEMBLY))


def shared_violations(graph: grimp.ImportGraph) -> list[str]:
    """Chains from a shared capability to the pipeline, a stage or the runner."""
    return forbidden_chains(graph, _within(graph, *SHARED), _within(graph, "ccpipe.pipeline", STAGES, RUNNER))


def assembly_violations(graph: grimp.ImportGraph) -> list[str]:
    """Imports of the assembly from outside it."""
    assembly = _within(graph, *ASSEMBLY)
    return [
        _hop(graph, importer, imported)
        for imported in sorted(assembly)
        for importer in sorted(graph.find_modules_that_directly_import(imported))
        if importer not in assembly
    ]


def handler_violations(graph: grimp.ImportGraph) -> list[str]:
    """Chains from a stage to another stage's handler, or from the runner to any handler."""
    handlers = handler_modules(graph)
    out: list[str] = []
    for stage in sorted(graph.find_children(STAGES)):
        own = _within(graph, stage)
        out += forbidden_chains(graph, own, handlers - own)
    out += forbidden_chains(graph, _within(graph, RUNNER), handlers)
    return out


def _cycles(graph: grimp.ImportGraph) -> Iterator[tuple[str, ...]]:
    """Each import cycle once, as module names from its alphabetically first module."""
    seen: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = (importer, *back)  # importer -> imported -> ... -> importer
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                yield cycle


def cycle_violations(graph: grimp.ImportGraph) -> list[str]:
    """Every import cycle between modules of ``ccpipe``."""
    return [describe(graph, c) for c in _cycles(graph)]


def sibling_cycle_violations(graph: grimp.ImportGraph) -> list[str]:
    """Pairs of sibling packages/modules that depend on each other (through any of their modules).

    The assembly is left out: it sits on top of everything by design (DESIGN.md keeps it in
    ``pipeline/``, which the stages import for the runtime), so it is no loop of the layers.
    """
    g = copy.deepcopy(graph)
    for module in _within(g, *ASSEMBLY):
        g.remove_module(module)
    out: list[str] = []
    for package in sorted(m for m in g.modules if g.find_children(m)):
        children = sorted(g.find_children(package))
        for i, a in enumerate(children):
            for b in children[i + 1 :]:
                there = g.find_shortest_chain(importer=a, imported=b, as_packages=True)
                back = g.find_shortest_chain(importer=b, imported=a, as_packages=True)
                if there is not None and back is not None:
                    out.append(f"{a} <-> {b}:\n      {describe(g, there)}\n    and\n      {describe(g, back)}")
    return out


def _report(what: str, violations: list[str]) -> str:
    return f"{what} ({len(violations)}):\n  " + "\n  ".join(violations)


# The tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def graph() -> grimp.ImportGraph:
    """The import graph of ``ccpipe`` (no external packages; no cache written into the tree)."""
    return grimp.build_graph(PACKAGE, include_external_packages=False, cache_dir=None)


def test_every_top_level_package_has_a_place(graph: grimp.ImportGraph) -> None:
    """A new package directly under ``ccpipe`` must be given its rules here first."""
    unplaced = sorted(graph.find_children(PACKAGE) - TOP_LEVEL)
    assert not unplaced, f"add these to SHARED or another layer of this test: {unplaced}"


def test_every_pipeline_module_is_runtime_audit_or_assembly(graph: grimp.ImportGraph) -> None:
    """A new module under ``ccpipe.pipeline`` must be placed in a layer before the rules can check it."""
    placed = set(RUNTIME) | _within(graph, AUDIT, *ASSEMBLY)
    unplaced = sorted(_within(graph, "ccpipe.pipeline") - placed)
    assert not unplaced, f"add these to RUNTIME, or move them under the audit trail or the assembly: {unplaced}"
    gone = sorted(set(RUNTIME) - set(graph.modules))
    assert not gone, f"RUNTIME names modules that no longer exist: {gone}"


def test_the_handler_rule_knows_every_handler_the_assembly_wires(graph: grimp.ImportGraph) -> None:
    """What the assembly starts from a stage is a handler by the rule's definition."""
    wired = {
        m for a in _within(graph, "ccpipe.pipeline.app")
        for m in graph.find_modules_directly_imported_by(a) if m.startswith(STAGES + ".")
    }
    assert wired, "the assembly wires no stage: the rule would check nothing"
    assert wired <= handler_modules(graph), f"not recognised as handlers: {sorted(wired - handler_modules(graph))}"


Rule = Callable[[grimp.ImportGraph], list[str]]

RULES: list[tuple[Rule, str]] = [
    (schemas_violations, "ccpipe.schemas imports the project"),
    (runtime_violations, "the runtime depends on a stage, the runner, the audit trail or the CLI"),
    (audit_violations, "the audit trail depends on a stage, the runner or the CLI"),
    (shared_violations, "a shared capability depends on the pipeline, a stage or the runner"),
    (assembly_violations, "the assembly is imported from outside"),
    (handler_violations, "a handler is imported across stages or by the runner"),
    (cycle_violations, "import cycles"),
    (sibling_cycle_violations, "sibling packages that depend on each other"),
]
"""Each rule of DESIGN.md, with what its failure means (the rule's docstring says what it checks)."""


@pytest.mark.parametrize(("rule", "what"), RULES, ids=[r.__name__.removesuffix("_violations") for r, _ in RULES])
def test_rule_holds(graph: grimp.ImportGraph, rule: Rule, what: str) -> None:
    """No import breaks the rule; the failure lists every chain that does."""
    violations = rule(graph)
    assert not violations, _report(what, violations)


PLANTED: list[tuple[Rule, str, str]] = [
    (schemas_violations, "ccpipe.schemas.events", "ccpipe.pipeline.bus"),
    (runtime_violations, "ccpipe.pipeline.bus", "ccpipe.stages.build.handler"),
    (runtime_violations, "ccpipe.pipeline.runtime", "ccpipe.pipeline.audit.service"),
    (audit_violations, "ccpipe.pipeline.audit.ingest", "ccpipe.stages.attest.handler"),
    (shared_violations, "ccpipe.evidence.errors", "ccpipe.stages.attest.errors"),
    (shared_violations, "ccpipe.evidence.errors", "ccpipe.pipeline.keyfiles"),
    (assembly_violations, "ccpipe.stages.deploy.handler", "ccpipe.pipeline.cli.main"),
    (handler_violations, "ccpipe.stages.sign.handler", "ccpipe.stages.attest.handler"),
    (handler_violations, "ccpipe.enclave_runner.agent", "ccpipe.stages.deploy.handler"),
    (cycle_violations, "ccpipe.pipeline.bus", "ccpipe.pipeline.reader"),  # reader imports bus
    (sibling_cycle_violations, "ccpipe.pipeline.bus", "ccpipe.pipeline.reader"),
    (sibling_cycle_violations, "ccpipe.stages.build.errors", "ccpipe.stages.sign.handler"),  # sign imports build
]


@pytest.mark.parametrize(("rule", "importer", "imported"), PLANTED, ids=lambda v: getattr(v, "__name__", v))
def test_each_rule_reports_a_planted_violation(
    graph: grimp.ImportGraph, rule: Rule, importer: str, imported: str
) -> None:
    """Plant one wrong import (a lazy one, line 99) into a copy of the graph: the rule names it."""
    planted = copy.deepcopy(graph)
    line = f"from {imported} import planted  # lazy, inside a function"
    planted.add_import(importer=importer, imported=imported, line_number=99, line_contents=line)
    before = set(rule(graph))
    new = [v for v in rule(planted) if v not in before]
    assert any(f"{importer} -> {imported} (line 99: {line})" in v for v in new), new
