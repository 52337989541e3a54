"""rego-cpp loaded before any other C++ library, so that it and libstdc++ use one allocator.

regopy's ``librego_shared.so`` brings its own ``operator new`` and ``operator delete`` (a
bundled allocator) and links the system's libstdc++. Loaded first, it is first in the lookup
scope of the libstdc++ it pulls in, so the C++ code it runs inside libstdc++ (strings, streams)
allocates and frees with the same allocator as its own code. If libstdc++ is already in the
process — ``import aiohttp`` loads it through frozenlist's C++ extension — libstdc++'s calls
were bound to glibc's allocator before rego-cpp arrived, and memory allocated by one side is
freed by the other: each Rego evaluation then leaked ~50 KB (a KBS grew ~65 KB per workload,
its Python objects flat), and rego-cpp's bundle writer aborted with ``free(): invalid size``.

:func:`load_rego_first` is called where a process that evaluates Rego starts (the CLI's
long-running commands, a KBS worker), before anything else is imported.
:func:`rego_loaded_late` tells afterwards whether it was (the compiled engines log it once).
"""

from __future__ import annotations

import ctypes
import functools
import os

_LIBSTDCXX = "libstdc++.so"
_LIBREGO = "librego_shared.so"


def load_rego_first() -> None:
    """Load regopy (and so rego-cpp and the libstdc++ it binds) now; a no-op once loaded."""
    import regopy  # noqa: F401  (the import is the point: it loads librego_shared.so)


class _PhdrInfo(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_void_p), ("name", ctypes.c_char_p)]  # the leading fields of dl_phdr_info


_PHDR_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t, ctypes.c_void_p)


def loaded_objects() -> list[str]:
    """The file names of the shared objects in this process, in the order they were loaded (the
    dynamic linker's list, through ``dl_iterate_phdr``); [] where that cannot be read."""
    names: list[str] = []

    def visit(info: ctypes._Pointer[_PhdrInfo], _size: int, _data: int | None) -> int:
        raw = info.contents.name
        if raw:
            names.append(os.path.basename(raw.decode(errors="replace")))
        return 0

    try:
        ctypes.CDLL(None).dl_iterate_phdr(_PHDR_CALLBACK(visit), None)
    except (OSError, AttributeError):
        return []
    return names


@functools.cache
def rego_loaded_late() -> bool:
    """Whether rego-cpp was loaded after another library had loaded libstdc++ (then its
    evaluations leak, see above). Asked once rego-cpp is loaded; cached."""
    order = loaded_objects()
    rego = next((i for i, name in enumerate(order) if name.startswith(_LIBREGO)), None)
    cxx = next((i for i, name in enumerate(order) if name.startswith(_LIBSTDCXX)), None)
    return rego is not None and cxx is not None and cxx < rego


__all__ = ["load_rego_first", "loaded_objects", "rego_loaded_late"]
