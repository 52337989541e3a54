"""Who the sandbox is on the host: a root runner gives each launch a fresh unprivileged uid."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SANDBOX_UID_BASE = 200_000
SANDBOX_UID_SPAN = 1 << 20
"""Per-launch host uids of a root runner's sandboxes: [200000, 200000 + 2^20), mapped to no user."""


def hand_over(root: Path, host_uid: int) -> None:
    """Give the unpacked root to ``host_uid`` (links themselves, never their targets).

    The sandbox then runs as that unprivileged host uid, and the workload's uid inside the
    user namespace maps onto it, so the workload owns the image's files as it does with a
    runner that is not root.
    """
    os.lchown(root, host_uid, host_uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), host_uid, host_uid)


def unprivileged_uid() -> int | None:
    """A fresh unassigned host uid for one sandbox when the runner is root, else None (run as the runner).

    Per launch, so concurrent workloads never share a uid (nor an RLIMIT_NPROC count).
    """
    if os.geteuid() != 0:
        return None
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)
