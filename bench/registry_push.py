"""Push throughput of a 256 MiB image: ccpipe's registry client next to `skopeo copy`, same run.

``python bench/registry_push.py [MiB]`` (default 256, the size the deploy issue asks for).

Each run starts a fresh docker-registry on loopback (a new port and store), so neither tool
can skip or mount the blob: skopeo's blob-info cache would otherwise mount it from the
previous run's repository. Prints the median MB/s of 3 runs of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccpipe.oci.registry import RegistryClient, push_layout
from ccpipe.pipeline.servers import EmbeddedRegistry
from tests.integration.oci.registry.registry_images import make_raw_blob_image

RUNS = 3


async def ccpipe_push(address: str, layout: Path) -> float:
    async with RegistryClient(address, plain_http=True) as c:
        start = time.perf_counter()
        await push_layout(c, layout, f"bench/{uuid.uuid4().hex[:8]}", "v1")
        return time.perf_counter() - start


def skopeo_push(address: str, layout: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{address}/bench/{uuid.uuid4().hex[:8]}:v1",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mib", nargs="?", type=int, default=256, help="image size in MiB (default 256)")
    size = ap.parse_args().mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp) / "img"
        make_raw_blob_image(layout, "v1", size)
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(RUNS):
            for name, runs, push in (("ccpipe", ours, None), ("skopeo", theirs, skopeo_push)):
                reg = EmbeddedRegistry(Path(tmp) / f"reg-{name}-{i}").start()
                try:
                    runs.append(
                        asyncio.run(ccpipe_push(reg.address, layout)) if push is None else push(reg.address, layout)
                    )
                finally:
                    reg.stop()
    mb, mib = size / 1e6, size >> 20
    for name, runs in (("ccpipe push", ours), ("skopeo copy", theirs)):
        med = statistics.median(runs)
        print(f"{name}  {mib} MiB: median {mb / med:7.1f} MB/s  ({med:.3f} s, {RUNS} runs)")


if __name__ == "__main__":
    main()
