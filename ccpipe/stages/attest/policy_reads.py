"""What part of ``input`` a Rego policy can read, found from its text — and the projection of an
input onto it, the part a decision memo may be keyed on.

A policy's decision is a function of its modules, its ``data`` and the parts of ``input`` it
reads. Rego reads ``input`` only through references that start with the identifier ``input``
(``input.a.b``, ``input["c"]``, ``input.s[x]``), so every occurrence of that word in the text —
comments and strings included, which only ever adds reads — is taken as a read:

* ``input`` followed by ``.name`` and ``["literal"]`` segments reads the whole value at that
  path (``input.snp.measurement`` → ``snp.measurement``, and everything below it);
* a segment ``[var]`` (a bare identifier: a variable, ``_``, or a constant) is a wildcard: every
  key at that level (``input.submods[n]["ear.status"]`` → ``submods.*.ear.status``);
* the path stops at anything else (a number, an expression, whitespace, a call), and the whole
  value at the path read so far is taken. A bare ``input`` is therefore the whole input;
* ``with input…`` and ``import input…`` count as the whole input.

A policy that reads the whole input, or calls a builtin whose result is not a function of its
arguments (``time.*``, ``rand.*``, ``uuid.*``, ``http.*``, ``net.*``, ``opa.*``, ``io.jwt.*``,
``providers.*``, ``crypto.x509.parse_and_verify…``, ``trace``, ``print``; matched anywhere in
the text), is not memoisable.

:func:`project` keeps, of an input, exactly what those paths reach: the value at each path, or a
marker when it is missing (missing and ``null`` differ), and at a wildcard every key with the
rest of the path below it. Where a path meets something that is not an object (a list, a
string…), the whole value is kept: a more specific key is never needed for soundness. An
input with an object key the engine would not see as it is (not a string, or holding a NUL,
which regopy's C interface cuts short) is not projected, so its decision is never memoised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

WILDCARD = object()
"""A path segment matching every key (``input.x[var]``)."""

Segment = str | object
Trie = dict[Any, "Trie"] | None
"""Paths as a trie: ``None`` means the whole value here is read."""

_WORD = "A-Za-z0-9_"
_INPUT = re.compile(rf"(?<![{_WORD}])input(?![{_WORD}])")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`')
_WS = re.compile(r"[ \t]*")
_WHOLE_BEFORE = re.compile(r"(?:with|import)\s+$")
_NONDETERMINISTIC = re.compile(
    rf"(?<![{_WORD}])(?:(?:time|rand|uuid|http|net|opa|providers|io\s*\.\s*jwt)\s*\."
    rf"|crypto\s*\.\s*x509\s*\.\s*parse_and_verify|(?:trace|print)(?![{_WORD}]))"
)


@dataclass(frozen=True)
class InputReads:
    """The input paths some policy modules can read, or why they cannot be memoised."""

    trie: Trie
    """The paths read (``None``: the whole input)."""
    reason: str | None = None
    """Why decisions must not be memoised; None when they may."""

    @property
    def memoisable(self) -> bool:
        """Whether a decision may be reused for inputs with the same projection."""
        return self.reason is None


def _literal(text: str, pos: int) -> tuple[str, int] | None:
    """A Rego string literal at ``pos`` (``"…"`` with JSON escapes, or `` `raw` ``) and its end."""
    m = _STRING.match(text, pos)
    if m is None:
        return None
    raw = m.group()
    try:
        value = raw[1:-1] if raw.startswith("`") else json.loads(raw)
    except ValueError:
        return None
    # A NUL could be cut short on either side of regopy's C interface: end the path there.
    return (value, m.end()) if isinstance(value, str) and "\x00" not in value else None


def _path_at(text: str, pos: int) -> list[Segment]:
    """The reference path that follows an ``input`` ending at ``pos`` (see the module docstring)."""
    path: list[Segment] = []
    while pos < len(text):
        if text[pos] == ".":
            m = _IDENT.match(text, pos + 1)
            if m is None:
                break
            path.append(m.group())
            pos = m.end()
        elif text[pos] == "[":
            inner = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            lit = _literal(text, inner)
            seg: Segment
            if lit is not None:
                seg, end = lit
            else:
                m = _IDENT.match(text, inner)
                if m is None:
                    break
                seg, end = WILDCARD, m.end()
            end = _WS.match(text, end).end()  # type: ignore[union-attr]
            if end >= len(text) or text[end] != "]":
                break
            path.append(seg)
            pos = end + 1
        else:
            break
    return path


def _insert(trie: Trie, path: list[Segment]) -> Trie:
    """``trie`` with ``path`` (read whole) added; a prefix already read whole absorbs it."""
    if trie is None or not path:
        return None
    head, rest = path[0], path[1:]
    trie[head] = _insert(trie[head], rest) if head in trie else _insert({}, rest)
    return trie


def analyse(texts: Iterable[str]) -> InputReads:
    """The input paths the modules ``texts`` can read together; never raises."""
    trie: Trie = {}
    for text in texts:
        bad = _NONDETERMINISTIC.search(text)
        if bad is not None:
            return InputReads(None, f"uses the non-deterministic builtin {bad.group()!r}")
        for m in _INPUT.finditer(text):
            # Extra caution only: 'with input.a as x' and 'import input.a' are sound as paths.
            if _WHOLE_BEFORE.search(text[max(0, m.start() - 256) : m.start()]) is not None:
                return InputReads(None, "replaces or imports input ('with input' / 'import input')")
            trie = _insert(trie, _path_at(text, m.end()))
            if trie is None:
                return InputReads(None, "reads the whole input")
    return InputReads(trie)


def merge(a: Trie, b: Trie) -> Trie:
    """The union of two tries."""
    if a is None or b is None:
        return None
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if k in out else v
    return out


class NotProjectable(ValueError):
    """The input holds something a canonical key cannot represent exactly (non-string object
    keys, sets, NaN…): the decision is then evaluated, never memoised."""


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
    """One byte string per projection: sorted keys, no spaces, UTF-8 (a memo key, not a wire format).

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
        out += [name + ("." + rest if rest else "") for rest in describe(sub)]
    return sorted(out)


__all__ = [
    "WILDCARD",
    "InputReads",
    "NotProjectable",
    "Trie",
    "analyse",
    "canonical",
    "describe",
    "merge",
    "project",
]
