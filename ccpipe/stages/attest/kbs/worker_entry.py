"""Where a KBS worker process starts: rego-cpp is loaded before anything else.

A spawned worker unpickles its target's arguments before the target runs, and unpickling the
worker configuration imports the KBS, aiohttp with it, and libstdc++ through frozenlist: too
late for rego-cpp (:mod:`ccpipe.stages.attest.rego_first`). So the worker function and its
configuration cross as pickled bytes and are opened here, after :func:`load_rego_first`. This
module imports nothing else of the project.
"""

from __future__ import annotations

import pickle
from typing import Any

from ccpipe.stages.attest.rego_first import load_rego_first


def start_worker(pickled_call: bytes, ready: Any, parent: int) -> None:
    """Entry point of a worker process: rego-cpp first, then ``worker(config, ready, parent)`` as
    pickled by the parent (``pickle.dumps((worker, config))``)."""
    load_rego_first()
    worker, config = pickle.loads(pickled_call)
    worker(config, ready, parent)


__all__ = ["start_worker"]
