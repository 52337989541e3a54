"""Fixtures for the sign stage: small OCI images (by hand or with umoci) and keys."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.unit.stages.sign.sign_helpers import make_image, run, write_pem_pair


@pytest.fixture
def image(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``image(name="src", tag="t", layers=2)`` -> layout path with a small two-layer image."""

    def build(name: str = "src", tag: str = "t", layers: int = 2, gzip_layers: bool = True) -> Path:
        path = tmp_path / name
        contents = [
            {f"app/file{i}.txt": f"layer {i}\n".encode(), f"app/rand{i}.bin": bytes(range(256)) * (40 + i)}
            for i in range(layers)
        ]
        make_image(path, tag, contents, gzip_layers=gzip_layers)
        return path

    return build


@pytest.fixture
def umoci_image(tmp_path: Path) -> Path:
    """A small image made by umoci (two layers: a text file, then random bytes), tagged ``t``."""
    for tool in ("umoci", "skopeo"):
        assert shutil.which(tool), f"{tool} is needed (scripts/install-system-deps.sh installs it)"
    path, bundle = tmp_path / "umoci-src", tmp_path / "bundle"
    run("umoci", "init", "--layout", path)
    run("umoci", "new", "--image", f"{path}:t")
    run("umoci", "unpack", "--rootless", "--image", f"{path}:t", bundle)
    (bundle / "rootfs" / "app").mkdir(parents=True)
    (bundle / "rootfs" / "app" / "hello.txt").write_text("hello confidential world\n")
    run("umoci", "repack", "--image", f"{path}:t", bundle)
    (bundle / "rootfs" / "app" / "rand.bin").write_bytes(hashlib.sha256(b"x").digest() * 5000)
    run("umoci", "repack", "--image", f"{path}:t", bundle)
    run("umoci", "gc", "--layout", path)
    return path


@pytest.fixture(scope="session")
def rsa_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private PEM, public PEM) of an RSA-2048 key."""
    return write_pem_pair(tmp_path_factory.mktemp("rsa"), "rsa", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="session")
def ec_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private PEM, public PEM) of an EC P-256 key."""
    return write_pem_pair(tmp_path_factory.mktemp("ec"), "ec", ec.generate_private_key(ec.SECP256R1()))
