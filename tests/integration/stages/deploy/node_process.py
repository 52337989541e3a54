"""A runner-like process for the scheduling tests: announces one node and heartbeats until killed.

``python node_process.py NATS_URL NODE_ID TEE KEY_FILE [--emulated] [--total N] [--free N]
[--tcb k=v,…] [--interval S]``. Heartbeats are signed with the Ed25519 key whose 32-byte seed is
in KEY_FILE. Prints ``ready`` once the first announcement is stored; on SIGTERM it leaves the
block (withdrawing the node), on SIGKILL it just stops heartbeating.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccpipe.pipeline.bus import connect
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement
from ccpipe.stages.deploy.inventory_kv import node_heartbeat


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("node_id")
    p.add_argument("tee")
    p.add_argument("key_file", type=Path)
    p.add_argument("--emulated", action="store_true")
    p.add_argument("--total", type=int, default=10)
    p.add_argument("--free", type=int, default=None)
    p.add_argument("--tcb", default="")
    # 1 s (a node is gone after 3 s of silence): short enough that a killed node's work moves
    # within seconds, long enough that a node process stalled by a loaded CI machine is not
    # taken for dead (with 0.3 s a stall of 1 s rescheduled work mid-test).
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    tcb = {k: int(v) for k, v in (item.split("=") for item in args.tcb.split(",") if item)}
    announcement = NodeAnnouncement(
        node_id=args.node_id, tee=TeeType(args.tee), backend="emulated" if args.emulated else "configfs-tsm",
        emulated=args.emulated, tcb=tcb,
        capacity=Capacity(total=args.total, free=args.total if args.free is None else args.free),
        labels={"role": "test"},
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    nc = await connect(args.url, name=f"node-{args.node_id}")
    key = Ed25519PrivateKey.from_private_bytes(args.key_file.read_bytes())
    async with node_heartbeat(nc.jetstream(), announcement, sign=key.sign, interval=args.interval):
        print("ready", flush=True)
        await stop.wait()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
