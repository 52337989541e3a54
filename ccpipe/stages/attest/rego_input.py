"""Python JSON values → a ``regopy.Input``, with the same result as ``regopy.Input(value)``, faster.

regopy converts a value node by node through ``collections.abc`` isinstance checks and a
``ctypes.create_string_buffer`` per string (≈2.5 µs a node; an EAR token has ~135 nodes). This
converter dispatches on the exact ``type()`` of each node and calls the same rego-cpp input
functions (``regoInput*``) directly, so the engine builds the same term; anything it does not
recognise exactly (subclasses, other mappings/sequences/sets) goes to regopy's own converter
for that node, so no value is ever converted differently.

Raises regopy's ``RegoError`` when the engine refuses a node, ``ValueError`` for a value that
is not JSON-like — exactly as ``regopy.Input`` does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence, Set
from typing import Any

import regopy
from regopy import rego_shared

_LIB = rego_shared.rego
_NEW = _LIB.regoNewInput
_FREE = _LIB.regoFreeInput
_INT = _LIB.regoInputInt
_FLOAT = _LIB.regoInputFloat
_STR = _LIB.regoInputString
_BOOL = _LIB.regoInputBoolean
_NULL = _LIB.regoInputNull
_ITEM = _LIB.regoInputObjectItem
_OBJECT = _LIB.regoInputObject
_ARRAY = _LIB.regoInputArray
_SET = _LIB.regoInputSet
_OK = int(rego_shared.Code.OK)


def _fail(code: int) -> None:
    raise rego_shared.RegoError("Unable to create input", code)


def _add(p: ctypes.c_void_p | int, val: Any) -> None:
    t = type(val)
    # Order: the commonest JSON types first. bool before int matters only for isinstance;
    # with exact types True is a bool, never an int.
    if t is str:
        # c_char_p of the UTF-8 bytes: what create_string_buffer(...) passes, without the copy.
        rc = _STR(p, val.encode("utf-8"))
    elif t is dict:
        rc = _add_object(p, val)
    elif t is bool:
        rc = _BOOL(p, val)
    elif t is int:
        rc = _INT(p, val)
    elif t is list or t is tuple:
        for x in val:
            _add(p, x)
        rc = _ARRAY(p, len(val))
    elif val is None:
        rc = _NULL(p)
    elif t is float:
        rc = _FLOAT(p, val)
    else:
        _slow(p, val)
        return
    if rc != _OK:
        _fail(rc)


def _add_object(p: ctypes.c_void_p | int, val: Mapping[Any, Any]) -> int:
    """Every item of ``val``, then the object node; returns the engine's code for the object."""
    for k, v in val.items():
        _add(p, k)
        _add(p, v)
        rc = _ITEM(p)
        if rc != _OK:
            _fail(rc)
    return int(_OBJECT(p, len(val)))


def _slow(p: ctypes.c_void_p | int, val: Any) -> None:
    """One node of a type not matched exactly: regopy's own isinstance order and outcome."""
    if val is True or val is False:
        rc = _BOOL(p, val)
    elif isinstance(val, int):
        rc = _INT(p, val)
    elif isinstance(val, float):
        rc = _FLOAT(p, val)
    elif isinstance(val, str):
        rc = _STR(p, val.encode("utf-8"))
    elif isinstance(val, Set):
        for x in val:
            _add(p, x)
        rc = _SET(p, len(val))
    elif isinstance(val, Mapping):
        rc = _add_object(p, val)
    elif isinstance(val, Sequence):
        for x in val:
            _add(p, x)
        rc = _ARRAY(p, len(val))
    else:
        raise ValueError("Cannot convert object of type " + str(type(val)) + " to rego input")
    if rc != _OK:
        _fail(rc)


def rego_input(value: Any) -> regopy.Input:
    """A ``regopy.Input`` holding ``value``; see the module docstring for what it raises."""
    p = _NEW()
    try:
        _add(p, value)
    except BaseException:
        _FREE(p)
        raise
    inp = regopy.Input.__new__(regopy.Input)
    inp._impl = p
    return inp


__all__ = ["rego_input"]
