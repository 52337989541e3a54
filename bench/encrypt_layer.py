"""Benchmark: ocicrypt layer encryption of a 256 MiB incompressible layer, ccpipe vs skopeo.

Builds one OCI image whose single layer is a tar+gzip (stored blocks, so the bytes stay
incompressible) of random data, then, alternating, runs three times each:

* ccpipe: ``ccpipe.stages.sign.encrypt_image(src, dst, [JweRecipient(pub)])`` in this process;
* skopeo: ``skopeo copy --encryption-key jwe:pub.pem oci:src:t oci:dst:t``;
* and, as a side table, decryption of ccpipe's output by ``decrypt_image`` and by
  ``skopeo copy --decryption-key``.

Prints the median throughput (layer bytes / wall time, MB = 10^6 bytes) of both, their ratio, and
peak memory: this process's max RSS (``getrusage(RUSAGE_SELF)``) and the peak of Python
allocations while encrypting (``tracemalloc``), beside skopeo's max RSS (``RUSAGE_CHILDREN``).
Goal: ccpipe >= 2x skopeo, peak < 100 MB.

Usage: ``.venv/bin/python bench/encrypt_layer.py [--size-mib 256] [--runs 3] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import secrets
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ccpipe.oci.documents import MEDIA_TYPE_LAYER_GZIP
from ccpipe.oci.layout import OciLayout
from ccpipe.stages.sign.encrypt import decrypt_image, encrypt_image
from ccpipe.stages.sign.recipients import JweRecipient

CHUNK = 1 << 20


def build_image(path: Path, size: int) -> str:
    """Write an image with one stored-gzip tar layer of ``size`` random bytes; returns the layer digest."""
    lay = OciLayout.create(path)
    diff = hashlib.sha256()
    gz = zlib.compressobj(level=0, wbits=31)  # stored deflate blocks: valid gzip, no compression
    with lay.blob_writer(MEDIA_TYPE_LAYER_GZIP) as writer:

        def put(raw: bytes) -> None:
            diff.update(raw)
            writer.write(gz.compress(raw))

        info = tarfile.TarInfo("data.bin")
        info.size, info.mode, info.mtime = size, 0o644, 0
        put(info.tobuf(format=tarfile.PAX_FORMAT))
        left = size
        while left:
            n = min(CHUNK, left)
            put(secrets.token_bytes(n))
            left -= n
        put(b"\0" * ((-size) % 512) + b"\0" * 1024)
        writer.write(gz.flush())
        layer = writer.commit()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff.hexdigest()]},
    }
    lay.write_image(config, [layer], tag="t")
    return layer.digest


def _layer_digest(path: Path) -> str:
    lay = OciLayout.open(path)
    return lay.read_manifest(lay.resolve("t")).layers[0].digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is needed (scripts/install-system-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="ccpipe-bench-", dir=args.workdir))
    try:
        size = args.size_mib << 20
        src = work / "src"
        layer_digest = build_image(src, size)
        blob_size = OciLayout.open(src).blob_path(layer_digest).stat().st_size
        priv = rsa.generate_private_key(65537, 2048)
        pub_pem = work / "pub.pem"
        pub_pem.write_bytes(
            priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        recipients = [JweRecipient.from_file(pub_pem)]
        ours, theirs, py_peak = [], [], 0
        ours_dec, theirs_dec = [], []
        priv_pem = work / "priv.pem"
        priv_pem.write_bytes(
            priv.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        for i in range(args.runs):
            dst = work / f"ours{i}"
            tracemalloc.start()
            t0 = time.perf_counter()
            encrypt_image(f"{src}:t", f"{dst}:t", recipients)
            ours.append(time.perf_counter() - t0)
            py_peak = max(py_peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            sdst = work / f"skopeo{i}"
            t0 = time.perf_counter()
            subprocess.run(
                ["skopeo", "copy", "-q", "--encryption-key", f"jwe:{pub_pem}", f"oci:{src}:t", f"oci:{sdst}:t"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            theirs.append(time.perf_counter() - t0)
            shutil.rmtree(sdst)
            # decryption of the same encrypted image, both ways
            t0 = time.perf_counter()
            decrypt_image(f"{dst}:t", work / "check", [priv])
            ours_dec.append(time.perf_counter() - t0)
            assert _layer_digest(work / "check") == layer_digest, "round trip changed the layer"
            shutil.rmtree(work / "check")
            t0 = time.perf_counter()
            subprocess.run(
                ["skopeo", "copy", "-q", "--decryption-key", str(priv_pem), f"oci:{dst}:t", f"oci:{work / 'sdec'}:t"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            theirs_dec.append(time.perf_counter() - t0)
            shutil.rmtree(work / "sdec")
            shutil.rmtree(dst)
        mb = blob_size / 1e6
        ours_mbs, theirs_mbs = mb / statistics.median(ours), mb / statistics.median(theirs)
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"layer: {blob_size} bytes ({args.size_mib} MiB random, tar+gzip stored), median of {args.runs}")
        print(f"{'':30}{'median s':>10}{'MB/s':>10}{'runs (s)':>28}")
        print(
            f"{'ccpipe encrypt_image':30}{statistics.median(ours):10.3f}{ours_mbs:10.0f}"
            f"{' '.join(f'{t:.3f}' for t in ours):>28}"
        )
        print(
            f"{'skopeo copy jwe: 1.9.3':30}{statistics.median(theirs):10.3f}{theirs_mbs:10.0f}"
            f"{' '.join(f'{t:.3f}' for t in theirs):>28}"
        )
        for name, runs in (("ccpipe decrypt_image", ours_dec), ("skopeo copy --decryption-key", theirs_dec)):
            print(
                f"{name:30}{statistics.median(runs):10.3f}{mb / statistics.median(runs):10.0f}"
                f"{' '.join(f'{t:.3f}' for t in runs):>28}"
            )
        print(
            f"encryption speed-up: {ours_mbs / theirs_mbs:.2f}x (goal >= 2x); decryption speed-up: "
            f"{statistics.median(theirs_dec) / statistics.median(ours_dec):.2f}x"
        )
        print(
            f"peak memory: ccpipe process max RSS {self_rss:.0f} MiB (includes the interpreter and image "
            f"generation), Python allocations while encrypting {py_peak / 2**20:.1f} MiB; "
            f"skopeo max RSS {child_rss:.0f} MiB (goal < 100 MB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
