"""The demo busybox base: deterministic, runnable, refused without busybox; ELF sniffing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ccpipe.oci.layout import OciLayout
from ccpipe.stages.build.base.busybox import make_busybox_base
from ccpipe.stages.build.base.elf import elf_architecture
from ccpipe.stages.build.errors import BaseNotFound
from ccpipe.stages.build.image_defaults import host_platform
from tests.unit.stages.build.build_helpers import layer_members


def test_busybox_base_is_deterministic_and_runs(tmp_path: Path, busybox_layout: Path) -> None:
    again = make_busybox_base(tmp_path / "again")
    assert again.digest == OciLayout.open(busybox_layout).resolve("busybox").digest
    layout = OciLayout.open(busybox_layout)
    manifest = layout.read_manifest(layout.resolve("busybox"))
    m = layer_members(layout.blob_path(manifest.layers[0].digest))
    assert m["bin/busybox"].mode == 0o755 and m["bin/busybox"].isreg()
    for applet in ("sh", "echo", "cat", "ls"):
        assert m[f"bin/{applet}"].issym() and m[f"bin/{applet}"].linkname == "busybox"
    assert m["tmp"].mode == 0o1777 and m["root"].mode == 0o700
    assert {x.mtime for x in m.values()} == {0}
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{busybox_layout}:busybox", str(bundle)], check=True)
    out = subprocess.run([bundle / "rootfs/bin/sh", "-c", "echo hi from busybox"], capture_output=True, check=True)
    assert out.stdout == b"hi from busybox\n"


def test_missing_busybox(tmp_path: Path) -> None:
    with pytest.raises(BaseNotFound, match="nope does not exist") as err:
        make_busybox_base(tmp_path / "l", busybox=tmp_path / "nope")
    assert "busybox-static" in err.value.hint


def test_elf_architecture(tmp_path: Path) -> None:
    assert elf_architecture(Path("/bin/busybox")) == host_platform().architecture
    script = tmp_path / "script"
    script.write_bytes(b"#!/bin/sh\necho not an ELF file\n")
    assert elf_architecture(script) is None
    big_endian_s390x = b"\x7fELF\x02\x02\x01" + bytes(11) + (0x16).to_bytes(2, "big")
    script.write_bytes(big_endian_s390x)
    assert elf_architecture(script) == "s390x"
