"""Which ended workloads' image layouts to remove, and removing them; pure core, no NATS.

The build stage writes a workload's plaintext image to ``<data_dir>/images/<workload>/plain``
and the sign stage its encrypted, signed image to ``…/signed``: working copies, a few MB
each, of what the registry holds once the workload is pushed. When the workload has ended
(``workload.exited`` or ``failed``) they are removed, unless the retention settings keep
them (``CCPIPE_RETAIN_WORKLOADS``: the latest N ended workloads; ``CCPIPE_RETAIN_HOURS``:
for T hours after the end; either one keeps them).

What stays, because audit and verification read it: the trail (every event, the evidence
included), the pushed image and its signatures in the registry, the sign stage's marker in NATS
KV (``CCPIPE_SIGN_MARKERS``: a late redelivery answers with the first result instead of signing
again), and beside the layouts whatever else is there (``initdata.toml``). The runner removes its
own workspace after every launch and keeps the workload's output log.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from ccpipe.stages.build.config import workload_image_dir

LAYOUTS = ("plain", "signed")
"""The working copies under ``<data_dir>/images/<workload>/`` that retention removes."""


def workloads_with_layouts(data_dir: Path) -> list[str]:
    """The workloads that still have an image layout under ``<data_dir>/images``, sorted."""
    images = data_dir / "images"
    if not images.is_dir():
        return []
    return sorted(d.name for d in images.iterdir() if any((d / kind).is_dir() for kind in LAYOUTS))


def due_for_removal(
    ended: Mapping[str, datetime], *, now: datetime, keep_last: int, keep_for: timedelta
) -> list[str]:
    """The ended workloads (id → when it ended) whose layouts go now, sorted.

    A workload is kept while it is among the ``keep_last`` latest to end, or while it ended
    less than ``keep_for`` ago; with both zero every ended workload goes.
    """
    latest = sorted(ended, key=lambda wl: (ended[wl], wl), reverse=True)[:keep_last]
    return sorted(wl for wl, at in ended.items() if wl not in latest and now - at >= keep_for)


def remove_layouts(data_dir: Path, workload_id: str) -> list[Path]:
    """Remove the workload's image layouts; returns those removed.

    Raises :class:`~ccpipe.schemas.errors.InvalidInput` for an id that cannot name a directory,
    and ``OSError`` when one cannot be removed.
    """
    removed = []
    for kind in LAYOUTS:
        path = workload_image_dir(data_dir, workload_id, kind)
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    return removed
