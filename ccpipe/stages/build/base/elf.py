"""ELF sniffing: which architecture an executable was built for, from its header alone."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

_ELF_MACHINES = {
    0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0x03: "386", 0x15: "ppc64le", 0x16: "s390x", 0xF3: "riscv64",
}  # fmt: skip
"""``e_machine`` values, named as Go (and so OCI platforms) name the architectures."""


def elf_architecture(path: Path) -> str | None:
    """The OCI architecture name of the ELF file at ``path``; ``None`` when it is not ELF or the machine is unknown."""
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"  # EI_DATA: 1 = little-endian
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order))
