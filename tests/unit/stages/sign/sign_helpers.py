"""Helpers for the sign-stage tests: build small OCI images by hand, run tools, read layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ccpipe.oci.documents import MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP
from ccpipe.oci.layout import OciLayout


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(path: Path, tag: str, layers: list[dict[str, bytes]], *, gzip_layers: bool = True) -> str:
    """Write an OCI image by hand (one layer per dict of files); returns its manifest digest."""
    lay = OciLayout.open_or_create(path)
    descs, diff_ids = [], []
    for files in layers:
        tar = _tar(files)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        blob = gzip.compress(tar, mtime=0) if gzip_layers else tar
        descs.append(lay.write_blob(blob, MEDIA_TYPE_LAYER_GZIP if gzip_layers else MEDIA_TYPE_LAYER))
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    return lay.write_image(config, descs, tag=tag).digest


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool, failing the test with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr}"
    return proc


def layer_digests(path: Path, tag: str = "t") -> list[str]:
    """The layer digests of a tagged image."""
    lay = OciLayout.open(path)
    return [layer.digest for layer in lay.read_manifest(lay.resolve(tag)).layers]


def write_pem_pair(folder: Path, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """Write ``NAME-priv.pem`` (PKCS#8) and ``NAME-pub.pem`` (SPKI), as skopeo's key flags take them."""
    priv, pub = folder / f"{name}-priv.pem", folder / f"{name}-pub.pem"
    priv.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub
