"""What a compiled Rego policy reads of ``input`` and ``data``, as rego-cpp's own plan states it —
and the projection of a document onto those reads, the part a cache may be keyed on.

regopy's public API compiles modules into a bundle (``Interpreter.build``) and writes it out
(``save_bundle``): its ``plan.json`` is the planned intermediate representation the engine runs,
in OPA's IR form. Every function of the plan gets ``input`` and ``data`` as its locals 0 and 1
(``params[0..1]``); a statement reaches into a document only through the local that holds it.
:func:`plan_reads` follows those locals through the whole plan (a flow-insensitive fixed point
over every function and call site) and records, per document, the paths reached:

* ``DotStmt`` — the key of a derived local: the path one key further (a key that is not a
  plain printable-ASCII string constant counts as every key at that level);
* ``ScanStmt`` — every key at that level; its value local one level further;
* ``AssignVarStmt``/``AssignVarOnceStmt``, arguments of a call to a plan function, its return
  local — the same paths carried to another local;
* a comparison with a constant scalar (``x != false``, ``x == "affirming"``): only whether it
  exists, is an object, or else its whole value — what the projection keeps of a path anyway;
* any other use of a derived local (a comparison with another local, a builtin argument, a
  value stored into a composite, the result set…) reads the whole value at its paths.

Rule values reached through ``data`` are calls to plan functions, whose own reads are recorded
where they happen, so every value of an evaluation is a function of the recorded reads. A plan
is not bounded — the decision must be evaluated every time — when it reads the whole input,
replaces a document (``WithStmt``), calls dynamically (``CallDynamicStmt``), calls a builtin
not known to be a pure function of its arguments (a clock, randomness, the network, ``print``),
or holds any statement this module does not know.

:func:`project` keeps, of a document, exactly what those paths reach: the value at each path,
or a marker when it is missing (missing and ``null`` differ), and at a wildcard every key with
the rest of the path below it. Where a path meets something that is not an object, the whole
value is kept. A document with an object key the engine would not see as it is (not a
string, or holding a NUL) is not projected, so its decision is never cached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

WILDCARD = object()
"""A path segment matching every key (``input.x[var]``)."""

Segment = str | object
Trie = dict[Any, "Trie"] | None
"""Paths as a trie: ``None`` means the whole value here is read; ``{}`` only that it exists."""

INPUT, DATA = 0, 1
"""The roots: OPA's IR passes ``input`` as local 0 and ``data`` as local 1 of every function."""

MAX_DEPTH = 64
"""A path deeper than this is not followed (a plan that loops over its own locals)."""

# Builtins whose result is a function of their arguments alone (rego-cpp's names, which are
# OPA's). Anything else — time.*, rand.*, uuid.*, http.send, net.*, opa.runtime, io.jwt.*
# (they check times), crypto.x509.parse_and_verify_* (the clock), print, trace — is not.
_PURE_BUILTINS = frozenset(
    (
        "eq", "neq", "lt", "lte", "gt", "gte", "equal", "assign", "plus", "minus", "mul", "div", "rem", "abs",
        "round", "ceil", "floor", "and", "or", "count", "sum", "product", "max", "min", "sort", "all", "any",
        "numbers.range", "numbers.range_step", "internal.member_2", "internal.member_3", "member", "concat",
        "contains", "startswith", "endswith", "lower", "upper", "substring", "sprintf", "format_int", "indexof",
        "indexof_n", "replace", "split", "trim", "trim_left", "trim_right", "trim_prefix", "trim_suffix",
        "trim_space", "strings.reverse", "strings.replace_n", "strings.any_prefix_match",
        "strings.any_suffix_match", "strings.count", "regex.match", "regex.is_valid", "regex.find_n", "regex.split",
        "regex.replace", "regex.find_all_string_submatch_n", "regex.template_match", "re_match", "glob.match",
        "glob.quote_meta", "array.concat", "array.slice", "array.reverse", "object.get", "object.keys",
        "object.remove", "object.union", "object.union_n", "object.filter", "object.subset", "json.filter",
        "json.remove", "json.patch", "walk", "intersection", "union", "is_number", "is_string", "is_boolean",
        "is_array", "is_set", "is_object", "is_null", "type_name", "to_number", "cast_array", "cast_set",
        "cast_string", "cast_boolean", "cast_null", "cast_object", "json.marshal", "json.marshal_with_options",
        "json.unmarshal", "json.is_valid", "yaml.marshal", "yaml.unmarshal", "yaml.is_valid", "base64.encode",
        "base64.decode", "base64.is_valid", "base64url.encode", "base64url.encode_no_pad", "base64url.decode",
        "hex.encode", "hex.decode", "urlquery.encode", "urlquery.decode", "urlquery.encode_object",
        "urlquery.decode_object", "crypto.sha256", "crypto.sha1", "crypto.md5", "crypto.hmac.sha256",
        "crypto.hmac.sha512", "crypto.hmac.sha1", "crypto.hmac.md5", "crypto.hmac.equal", "units.parse",
        "units.parse_bytes", "semver.compare", "semver.is_valid", "bits.or", "bits.and", "bits.negate", "bits.xor",
        "bits.lsh", "bits.rsh", "graph.reachable", "graph.reachable_paths", "io.jwt.decode", "net.cidr_contains",
        "net.cidr_intersects", "net.cidr_is_valid", "net.cidr_merge", "net.cidr_expand",
    )
)

# A static key is taken as written only if it cannot be an escaped or quoted form of another.
_PLAIN_KEY = re.compile(r'^[ !#-\[\]-~]*$')

_KNOWN = frozenset(
    (
        "ArrayAppendStmt", "AssignIntStmt", "AssignVarOnceStmt", "AssignVarStmt", "BlockStmt", "BreakStmt",
        "CallStmt", "DotStmt", "EqualStmt", "IsArrayStmt", "IsDefinedStmt", "IsObjectStmt", "IsSetStmt",
        "IsUndefinedStmt", "LenStmt", "MakeArrayStmt", "MakeNullStmt", "MakeNumberIntStmt", "MakeNumberRefStmt",
        "MakeObjectStmt", "MakeSetStmt", "NopStmt", "NotEqualStmt", "NotStmt", "ObjectInsertOnceStmt",
        "ObjectInsertStmt", "ObjectMergeStmt", "ResetLocalStmt", "ResultSetAddStmt", "ReturnLocalStmt", "ScanStmt",
        "SetAddStmt",
    )
)
# Fields that never name a local that is read (written targets, literals, positions).
_NOT_READ = frozenset({"target", "file", "row", "col", "index", "capacity", "func", "path"})

Path = tuple[int, tuple[Segment, ...]]
"""A root (:data:`INPUT` or :data:`DATA`) and the segments below it."""
Var = tuple[str, int]
"""A local of one function (or top-level plan): (its name, the local's number)."""


@dataclass(frozen=True)
class PolicyReads:
    """The paths of ``input`` and ``data`` a compiled policy can read, or why they are unbounded."""

    input: Trie
    """The input paths read (``None``: the whole input)."""
    data: Trie
    """The data paths read (``None``: the whole of ``data``)."""
    reason: str | None = None
    """Why decisions must not be cached; None when they may."""

    @property
    def memoisable(self) -> bool:
        """Whether a decision may be reused for documents with the same projections."""
        return self.reason is None


class _Unbounded(Exception):
    """The plan holds something whose reads cannot be bounded."""


def _is_local(op: Any) -> bool:
    return isinstance(op, dict) and op.get("type") == "local"


def _stmts(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every statement of ``blocks``, nested blocks included."""
    for block in blocks:
        for stmt in block.get("stmts", ()):
            yield stmt
            inner = stmt.get("stmt", {})
            if "block" in inner:
                yield from _stmts([inner["block"]])
            if "blocks" in inner:
                yield from _stmts(inner["blocks"])


class _Analysis:
    def __init__(self, plan: dict[str, Any]) -> None:
        static = plan.get("static", {})
        self.strings = [s.get("value") for s in static.get("strings", [])]
        self.funcs = {f["name"]: f for f in plan.get("funcs", {}).get("funcs", [])}
        self.bodies: list[tuple[str, list[dict[str, Any]]]] = [
            (p["name"], p["blocks"]) for p in plan.get("plans", {}).get("plans", [])
        ] + [(name, f["blocks"]) for name, f in self.funcs.items()]
        self.paths: dict[Var, set[Path]] = {}
        for name, _ in self.bodies[: len(plan.get("plans", {}).get("plans", []))]:
            self.paths[(name, 0)] = {(INPUT, ())}
            self.paths[(name, 1)] = {(DATA, ())}
        self.returns: dict[str, set[Path]] = {}
        self.touched: set[Path] = set()
        self.whole: set[Path] = set()
        self.changed = False

    def flow(self, var: Var, paths: set[Path]) -> None:
        have = self.paths.setdefault(var, set())
        if not paths <= have:
            for _, segs in paths:
                if len(segs) > MAX_DEPTH:
                    raise _Unbounded(f"a path deeper than {MAX_DEPTH} levels")
            have |= paths
            self.changed = True

    def operand(self, fn: str, op: Any) -> set[Path]:
        if isinstance(op, dict) and op.get("type") == "local":
            return self.paths.get((fn, int(op["value"])), set())
        if isinstance(op, int) and not isinstance(op, bool):
            return self.paths.get((fn, op), set())
        return set()

    def read_whole(self, fn: str, stmt: dict[str, Any]) -> None:
        for field, op in stmt.items():
            if field not in _NOT_READ and field not in ("block", "blocks"):
                self.whole |= self.operand(fn, op)

    def key(self, op: Any) -> Segment:
        if isinstance(op, dict) and op.get("type") == "string_index":
            text = self.strings[int(op["value"])]
            if isinstance(text, str) and _PLAIN_KEY.match(text) and not text.startswith('"'):
                return text
        return WILDCARD

    def step(self, fn: str, kind: str, stmt: dict[str, Any]) -> None:
        if kind not in _KNOWN:
            raise _Unbounded(f"the plan holds a {kind}")
        if kind == "DotStmt":
            seg = self.key(stmt["key"])
            self.whole |= self.operand(fn, stmt["key"])
            below = {(root, (*segs, seg)) for root, segs in self.operand(fn, stmt["source"])}
            self.touched |= below
            self.flow((fn, int(stmt["target"])), below)
        elif kind == "ScanStmt":
            below = {(root, (*segs, WILDCARD)) for root, segs in self.operand(fn, stmt["source"])}
            self.touched |= below
            self.flow((fn, int(stmt["value"])), below)
        elif kind in ("AssignVarStmt", "AssignVarOnceStmt"):
            self.flow((fn, int(stmt["target"])), set(self.operand(fn, stmt["source"])))
        elif kind == "ReturnLocalStmt":
            self._return(fn, self.operand(fn, stmt["source"]))
        elif kind == "CallStmt":
            self.call(fn, stmt)
        elif kind in ("EqualStmt", "NotEqualStmt") and not (_is_local(stmt["a"]) and _is_local(stmt["b"])):
            # A derived value against a constant scalar (rego-cpp checks every reference in a
            # body with `!= false`): an object never equals a scalar, and the projection keeps
            # whether the value is an object and every value that is not. Touched is enough.
            self.touched |= self.operand(fn, stmt["a"]) | self.operand(fn, stmt["b"])
        elif kind not in ("BlockStmt", "NotStmt", "BreakStmt", "NopStmt", "ResetLocalStmt",
                          "IsDefinedStmt", "IsUndefinedStmt", "MakeNumberIntStmt", "AssignIntStmt"):
            self.read_whole(fn, stmt)

    def _return(self, fn: str, paths: set[Path]) -> None:
        have = self.returns.setdefault(fn, set())
        if not paths <= have:
            have |= paths
            self.changed = True

    def call(self, fn: str, stmt: dict[str, Any]) -> None:
        target = stmt["func"]
        args = stmt.get("args", [])
        callee = self.funcs.get(target)
        if callee is None:
            if target not in _PURE_BUILTINS:
                raise _Unbounded(f"calls the builtin {target!r}, not known to be a pure function")
            for arg in args:
                self.whole |= self.operand(fn, arg)
            return
        for param, arg in zip(callee["params"], args, strict=False):
            self.flow((target, int(param)), set(self.operand(fn, arg)))
        # The callee's return local carries its paths to the caller's result.
        self._return(target, self.paths.get((target, int(callee["return"])), set()))
        self.flow((fn, int(stmt["result"])), set(self.returns.get(target, set())))

    def run(self) -> None:
        self.changed = True
        while self.changed:
            self.changed = False
            for fn, blocks in self.bodies:
                for stmt in _stmts(blocks):
                    kind = stmt.get("type", "")
                    if kind in ("WithStmt", "CallDynamicStmt"):
                        raise _Unbounded(f"the plan holds a {kind} (a replaced document or a dynamic call)")
                    self.step(fn, str(kind), stmt.get("stmt", {}))

    def trie(self, root: int) -> Trie:
        trie: Trie = {}
        for r, segs in sorted(self.touched, key=repr):
            if r == root:
                trie = _insert(trie, list(segs), whole=False)
        for r, segs in self.whole:
            if r == root:
                trie = _insert(trie, list(segs), whole=True)
        return trie


def plan_reads(plan: dict[str, Any]) -> PolicyReads:
    """What the plan of a compiled bundle (its ``plan.json``) reads; never raises."""
    analysis = _Analysis(plan)
    try:
        if not analysis.bodies:
            raise _Unbounded("the plan is empty")
        analysis.run()
    except (_Unbounded, KeyError, TypeError, ValueError, IndexError) as exc:
        reason = str(exc) if isinstance(exc, _Unbounded) else f"the plan is not understood ({exc!r})"
        return PolicyReads(None, None, reason)
    inp = analysis.trie(INPUT)
    if inp is None:
        return PolicyReads(None, analysis.trie(DATA), "reads the whole input")
    return PolicyReads(inp, analysis.trie(DATA))


def _insert(trie: Trie, path: list[Segment], *, whole: bool) -> Trie:
    """``trie`` with ``path`` added (read whole, or only touched); a prefix read whole absorbs it."""
    if trie is None:
        return None
    if not path:
        return None if whole else trie
    head, rest = path[0], path[1:]
    trie[head] = _insert(trie.get(head, {}), rest, whole=whole)
    return trie


def merge(a: Trie, b: Trie) -> Trie:
    """The union of two tries."""
    if a is None or b is None:
        return None
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if k in out else v
    return out


class NotProjectable(ValueError):
    """The document holds something a canonical key cannot represent exactly (non-string object
    keys, sets, NaN…): the decision is then evaluated, never cached."""


_MISSING = ["m"]


def _whole(value: Any) -> list[Any]:
    _check(value)
    return ["v", value]


def _check_key(key: Any) -> None:
    # regopy passes strings to the engine as C strings: a key with a NUL would reach it cut
    # short, so the engine could find a key under a name the Python object does not have.
    if type(key) is not str or "\x00" in key:
        raise NotProjectable("an object key is not a string the engine keeps as it is")


def _check(value: Any) -> None:
    """Raise :class:`NotProjectable` unless ``value`` is plain JSON of exact types."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            _check_key(k)
            _check(v)
    elif t is list or t is tuple:
        for v in value:
            _check(v)
    elif t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise NotProjectable("a number is not finite")
    elif not (t is str or t is int or t is bool or value is None):
        raise NotProjectable(f"a value of type {t.__name__} is not plain JSON")


def project(value: Any, trie: Trie) -> Any:
    """The part of ``value`` that ``trie`` reaches, as plain JSON (see the module docstring).

    Raises :class:`NotProjectable` for values a canonical JSON key cannot represent exactly.
    """
    if trie is None or type(value) is not dict:
        return _whole(value)
    for k in value:
        _check_key(k)  # a static look-up below must find exactly what the engine finds
    out: dict[str, Any] = {}
    if WILDCARD in trie:
        wildcard = trie[WILDCARD]
        for k, v in value.items():
            sub = merge(wildcard, trie[k]) if k in trie else wildcard
            out[k] = project(v, sub)
    for k, sub in trie.items():
        if k is WILDCARD or k in out:
            continue
        out[k] = project(value[k], sub) if k in value else _MISSING
    return ["d", out]


def canonical(projection: Any) -> bytes:
    """One byte string per projection: sorted keys, no spaces, UTF-8 (a cache key, not a wire format).

    orjson writes it; what orjson cannot (an integer beyond 64 bits) the standard encoder does,
    behind another first byte, so the two never produce the same key. Numbers are finite
    (:func:`project` refuses others, which orjson would write as null). Raises
    :class:`NotProjectable` if it cannot be encoded (e.g. a lone surrogate).
    """
    try:
        return b"o" + orjson.dumps(projection, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError; a lone surrogate fails the same way below
        first = str(exc)  # the text only: the exception would tie this frame into a reference cycle
    try:
        return b"j" + json.dumps(
            projection, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise NotProjectable(f"{first}; {exc}") from exc


def describe(trie: Trie) -> list[str]:
    """The paths of ``trie`` as dotted strings (``*`` for a wildcard), for logs and tests."""
    if trie is None:
        return [""]
    out: list[str] = []
    for k, sub in trie.items():
        name = "*" if k is WILDCARD else str(k)
        out += [name + ("." + rest if rest else "") for rest in (describe(sub) if sub != {} else [""])]
    return sorted(out)


__all__ = [
    "DATA",
    "INPUT",
    "WILDCARD",
    "NotProjectable",
    "PolicyReads",
    "Trie",
    "canonical",
    "describe",
    "merge",
    "plan_reads",
    "project",
]
