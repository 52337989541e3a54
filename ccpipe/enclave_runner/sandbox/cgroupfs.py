"""Where this process's cgroups are, from the text of ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` (pure).

A machine has the unified hierarchy (cgroup v2, the ``0::/path`` line), v1 hierarchies (one
line per hierarchy, ``N:controller[,controller]:/path``), or both: a hybrid machine binds some
controllers to v1 and leaves only the rest on the unified hierarchy. Which one holds a given
controller is decided per controller by :func:`hierarchy_for`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ccpipe.schemas.events import LimitKind


@dataclass(frozen=True)
class Membership:
    """The cgroups a process belongs to, as ``/proc/<pid>/cgroup`` lists them."""

    unified: str | None = None
    """Its cgroup path on the unified hierarchy (the ``0::`` line), if any."""
    v1: Mapping[str, str] = field(default_factory=dict)
    """Controller (or ``name=…``) → its cgroup path in that controller's v1 hierarchy."""


@dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup filesystem, from a line of ``/proc/<pid>/mountinfo``."""

    mount_point: Path
    root: str
    """The cgroup shown at the mount point (``/`` unless a subtree or a cgroup namespace is mounted)."""
    version: int
    controllers: frozenset[str] = frozenset()
    """v1: the controllers of the hierarchy (from its super options); v2: empty (see ``cgroup.controllers``)."""


@dataclass(frozen=True)
class Hierarchies:
    """This process's own cgroup directories: on the unified hierarchy, and per v1 controller."""

    unified: Path | None = None
    v1: Mapping[str, Path] = field(default_factory=dict)


def parse_proc_cgroup(text: str) -> Membership:
    """The :class:`Membership` in a ``/proc/<pid>/cgroup`` file; malformed lines are skipped."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and not controllers:
            unified = path
        else:
            for controller in controllers.split(","):
                if controller:
                    v1[controller] = path
    return Membership(unified, v1)


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(value: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), value)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts in a ``/proc/<pid>/mountinfo`` file, in its order."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields, fs_fields = before.split(), after.split()
        if not sep or len(fields) < 5 or len(fs_fields) < 3:
            continue
        fstype, super_options = fs_fields[0], fs_fields[2].split(",")
        root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2":
            mounts.append(CgroupMount(mount_point, root, 2))
        elif fstype == "cgroup":
            mounts.append(CgroupMount(mount_point, root, 1, frozenset(super_options)))
    return mounts


def cgroup_dir(mount: CgroupMount, path: str) -> Path | None:
    """The directory of cgroup ``path`` under ``mount``; None when the mount does not show that cgroup."""
    top = mount.root.rstrip("/")
    if ".." in path.split("/") or not (path == top or path.startswith(top + "/")):
        return None  # outside the mounted subtree (or above this process's cgroup namespace)
    relative = path[len(top):].strip("/")
    return mount.mount_point / relative if relative else mount.mount_point


def locate(membership: Membership, mounts: list[CgroupMount]) -> Hierarchies:
    """This process's cgroup directories, given its membership and the mounted cgroup filesystems."""
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for mount in mounts:
        if mount.version == 2 and unified is None and membership.unified is not None:
            unified = cgroup_dir(mount, membership.unified)
        elif mount.version == 1:
            for controller in mount.controllers:
                path = membership.v1.get(controller)
                if path is not None and controller not in v1 and (found := cgroup_dir(mount, path)) is not None:
                    v1[controller] = found
    return Hierarchies(unified, v1)


def hierarchy_for(controller: str, unified_offers: frozenset[str], hierarchies: Hierarchies) -> LimitKind | None:
    """Where a per-run cgroup for ``controller`` goes: the unified hierarchy when the runner's delegated
    cgroup offers the controller there (``unified_offers``: its ``cgroup.controllers``), else the
    controller's v1 hierarchy, else nowhere (None)."""
    if controller in unified_offers:
        return LimitKind.CGROUP_V2
    if controller in hierarchies.v1:
        return LimitKind.CGROUP_V1
    return None
