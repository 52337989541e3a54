"""At most one signing per workload: a dead delivery's claim is taken over, a live one is waited for."""

from __future__ import annotations

import asyncio
import time

import pytest

from ccpipe.schemas.events import Signed
from ccpipe.stages.sign.once import AlreadySigned, Marker, SignOnce
from tests.unit.stages.sign.sign_stage_helpers import MemoryMarkers

SIGNED = Signed(image_digest="sha256:" + "ab" * 32, source_image_digest="sha256:" + "cd" * 32, layout="/l",
                key_resource="kbs:///ccpipe/wl/image-key", signature_digest="sha256:" + "ef" * 32,
                initdata_digest="00" * 32)


async def test_a_claim_left_by_a_dead_delivery_is_taken_over() -> None:
    markers = MemoryMarkers()
    stale = Marker(input_event_id="att-1", claimed_at=time.time() - 120)
    await markers.create("wl", stale.model_dump_json().encode())
    calls: list[str] = []

    async def sign() -> Signed:
        calls.append("signed")
        return SIGNED

    assert await SignOnce(markers, stale_after_s=60).run("wl", "att-1", sign) == SIGNED
    assert calls == ["signed"]
    # another input is refused, and the same one gets the result without signing again
    with pytest.raises(AlreadySigned):
        await SignOnce(markers).run("wl", "att-2", sign)
    assert await SignOnce(markers).run("wl", "att-1", sign) == SIGNED and calls == ["signed"]


async def test_a_live_claim_is_waited_for_not_signed_twice() -> None:
    markers = MemoryMarkers()
    await markers.create("wl", Marker(input_event_id="att-1", claimed_at=time.time()).model_dump_json().encode())

    async def never() -> Signed:
        raise AssertionError("a second signing while the first is alive")

    waiting = asyncio.create_task(SignOnce(markers, poll_s=0.01).run("wl", "att-1", never))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    revision = markers.values["wl"][1]
    done = Marker(input_event_id="att-1", claimed_at=time.time(), signed=SIGNED)
    await markers.update("wl", done.model_dump_json().encode(), revision)  # the first delivery finishes
    assert await asyncio.wait_for(waiting, 2) == SIGNED
