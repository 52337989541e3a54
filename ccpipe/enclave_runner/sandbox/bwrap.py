"""The bubblewrap command line and the mount points it needs in the root (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

from ccpipe.enclave_runner.errors import SandboxError, UnpackError
from ccpipe.enclave_runner.rootfs import make_dirs_in_root
from ccpipe.enclave_runner.sandbox.spec import RunSpec

_MOUNT_POINTS = ("proc", "dev", "tmp")


def bwrap_argv(root: Path, spec: RunSpec, *, bwrap: str = "bwrap") -> list[str]:
    """The ``bwrap`` command line that runs ``spec`` with ``root`` as ``/`` (see the package docstring)."""
    args = [bwrap, "--unshare-all"]
    if spec.network:
        args.append("--share-net")
    args += [
        "--die-with-parent", "--new-session",
        "--ro-bind", str(root), "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--uid", str(spec.uid), "--gid", str(spec.gid),
        "--hostname", spec.hostname,
        "--chdir", spec.workdir,
        "--cap-drop", "ALL",
        "--clearenv",
    ]
    for key, value in spec.env:
        args += ["--setenv", key, value]
    return [*args, "--", *spec.argv]


def prepare_root(root: Path, spec: RunSpec) -> None:
    """Create the mount points and the workdir inside the (still writable) root before it is bound read-only.

    Raises :class:`SandboxError` when the image has a non-directory where one is needed.
    """
    for path in (*_MOUNT_POINTS, spec.workdir):
        try:
            make_dirs_in_root(root, path)
        except UnpackError as exc:  # the rootfs helpers raise the unpack family
            raise SandboxError(f"cannot prepare {path} in the image root: {exc.message}",
                               code="runner.sandbox.root") from exc
