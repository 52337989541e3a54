"""What the image configs this stage writes default to: the builder's platform, ``PATH``, RFC 3339 times."""

from __future__ import annotations

import platform as _platform
from datetime import UTC, datetime

from ccpipe.oci.documents import Platform

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The ``Env`` entry of an image with no base (and of the busybox base)."""

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> Platform:
    """linux/<this machine's architecture, as Go names it>."""
    machine = _platform.machine()
    return Platform(architecture=_GOARCH.get(machine, machine), os="linux")


def rfc3339(epoch: int) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` of a Unix time."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
