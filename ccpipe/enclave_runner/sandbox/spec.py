"""What to run inside the sandbox, from the image config: argv, environment, workdir, user."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ccpipe.enclave_runner.errors import SandboxError
from ccpipe.enclave_runner.image import RunConfig
from ccpipe.enclave_runner.rootfs import read_in_root

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` of a workload whose image sets none (and of ``bwrap`` itself)."""


@dataclass(frozen=True)
class RunSpec:
    """What to run inside the sandbox."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    uid: int = 0
    gid: int = 0
    network: bool = False
    hostname: str = "ccpipe"


def _lookup(table: bytes | None, name: str, field_index: int) -> int | None:
    """Numeric id of ``name`` in a passwd/group file (``name:x:uid:gid:…``)."""
    for line in (table or b"").decode("utf-8", "replace").splitlines():
        cols = line.split(":")
        if len(cols) > field_index and cols[0] == name and cols[field_index].isdigit():
            return int(cols[field_index])
    return None


def resolve_user(root: Path, user: str) -> tuple[int, int]:
    """``(uid, gid)`` of the image config's ``User`` (``""``, ``uid``, ``uid:gid``, names).

    Names are looked up in the image's own ``/etc/passwd`` / ``/etc/group``; raises
    :class:`SandboxError` when a name is not there.
    """
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    passwd = None
    if name.isdigit():
        uid = int(name)
        gid_default = 0
    else:
        passwd = read_in_root(root, "etc/passwd")
        found = _lookup(passwd, name, 2)
        if found is None:
            raise SandboxError(f"image user {name!r} is not in the image's /etc/passwd", code="runner.sandbox.user")
        uid = found
        gid_default = _lookup(passwd, name, 3) or 0
    if not group:
        return uid, gid_default
    if group.isdigit():
        return uid, int(group)
    gid = _lookup(read_in_root(root, "etc/group"), group, 2)
    if gid is None:
        raise SandboxError(f"image group {group!r} is not in the image's /etc/group", code="runner.sandbox.user")
    return uid, gid


def run_spec(root: Path, config: RunConfig, *, network: bool = False) -> RunSpec:
    """The :class:`RunSpec` of an image config; raises :class:`SandboxError` without a command."""
    argv = config.argv
    if not argv:
        raise SandboxError("the image has neither an entrypoint nor a cmd", code="runner.sandbox.no_command",
                           hint="set entrypoint or cmd in the workload's ccpipe.toml [build] table")
    env: dict[str, str] = {}
    for item in config.env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root" if not config.user or config.user.split(":")[0] in ("0", "root") else "/")
    uid, gid = resolve_user(root, config.user)
    workdir = config.workdir if config.workdir.startswith("/") else "/" + config.workdir
    return RunSpec(tuple(argv), tuple(env.items()), workdir, uid, gid, network)
