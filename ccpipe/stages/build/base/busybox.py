"""The demo base: a small, deterministic image made from Debian's static busybox (no registry needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ccpipe.oci.documents import ANNOTATION_CREATED, Descriptor
from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base.elf import elf_architecture
from ccpipe.stages.build.errors import BaseNotFound
from ccpipe.stages.build.image_defaults import DEFAULT_PATH, host_platform, rfc3339
from ccpipe.stages.build.layer import DEFAULT_COMPRESSION, Compression, EntryType, LayerEntry, write_layer


def busybox_applets(busybox: Path) -> list[str]:
    """The applet names the busybox binary reports (``busybox --list``), sorted."""
    try:
        out = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaseNotFound(
            f"{busybox} cannot list its applets: {exc}",
            hint="install Debian's busybox-static (scripts/install-system-deps.sh)",
        ) from exc
    names = {n for n in out.decode().split() if re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", n) and n != "busybox"}
    return sorted(names)


def make_busybox_base(
    layout_dir: Path,
    *,
    tag: str = "busybox",
    busybox: Path = Path("/bin/busybox"),
    source_date_epoch: int = 0,
    compression: Compression = DEFAULT_COMPRESSION,
) -> Descriptor:
    """Make a small, deterministic base image from a static busybox binary.

    One layer: ``/bin/busybox`` and a symlink ``/bin/<applet> -> busybox`` per applet (sh,
    echo, cat, ls, …), ``/etc/passwd`` and ``/etc/group`` (root, nobody), ``/root`` (0700)
    and ``/tmp`` (1777); every mtime is ``source_date_epoch``. The same binary always gives
    the same manifest digest. Returns the tagged manifest descriptor.
    """
    busybox = Path(busybox)
    if not busybox.is_file():
        raise BaseNotFound(f"{busybox} does not exist", hint="install Debian's busybox-static package")
    arch = elf_architecture(busybox) or host_platform().architecture
    sde = source_date_epoch
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    group = b"root:x:0:\nnogroup:x:65534:\n"
    entries = [
        LayerEntry("bin", EntryType.DIR, 0o755, mtime=sde),
        LayerEntry("bin/busybox", EntryType.FILE, 0o755, mtime=sde, size=busybox.stat().st_size, source=busybox),
        LayerEntry("etc", EntryType.DIR, 0o755, mtime=sde),
        LayerEntry("etc/passwd", EntryType.FILE, 0o644, mtime=sde, size=len(passwd), data=passwd),
        LayerEntry("etc/group", EntryType.FILE, 0o644, mtime=sde, size=len(group), data=group),
        LayerEntry("root", EntryType.DIR, 0o700, mtime=sde),
        LayerEntry("tmp", EntryType.DIR, 0o1777, mtime=sde),
    ]
    entries += [
        LayerEntry(f"bin/{name}", EntryType.SYMLINK, 0o777, mtime=sde, linkname="busybox")
        for name in busybox_applets(busybox)
    ]
    layout = OciLayout.open_or_create(layout_dir)
    layer = write_layer(layout, entries, source_date_epoch=sde, compression=compression)
    created = rfc3339(sde)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created, "created_by": "ccpipe busybox base", "comment": "ccpipe"}],
    }
    return layout.write_image(config, [layer.descriptor], tag=tag, annotations={ANNOTATION_CREATED: created})
