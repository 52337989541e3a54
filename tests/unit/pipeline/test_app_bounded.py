"""A service whose stop hangs is abandoned after the stop timeout, naming it; others still stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ccpipe.pipeline import app
from ccpipe.pipeline.services import Endpoints

EPS = Endpoints(nats_url="nats://127.0.0.1:1")


async def test_a_stuck_stop_is_abandoned_with_its_name(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(app, "STOP_TIMEOUT_S", 0.2)
    stopped: list[str] = []

    @asynccontextmanager
    async def stuck_service(settings: object, eps: Endpoints) -> AsyncIterator[Endpoints]:
        yield eps
        await asyncio.Event().wait()  # never stops on its own

    @asynccontextmanager
    async def good_service(settings: object, eps: Endpoints) -> AsyncIterator[Endpoints]:
        yield eps.model_copy(update={"kbs_url": "http://127.0.0.1:2"})
        stopped.append("good")

    caplog.set_level(logging.ERROR, logger="ccpipe.app")
    async with asyncio.timeout(5):
        async with app.running_services(None, EPS, (good_service, stuck_service)) as eps:  # type: ignore[arg-type]
            assert eps.kbs_url == "http://127.0.0.1:2"
    assert stopped == ["good"]
    assert "stuck_service" in caplog.text and "did not stop" in caplog.text


async def test_an_error_inside_the_block_still_propagates() -> None:
    @asynccontextmanager
    async def quick(settings: object, eps: Endpoints) -> AsyncIterator[Endpoints]:
        yield eps

    with pytest.raises(RuntimeError, match="boom"):
        async with app.running_services(None, EPS, (quick,)):  # type: ignore[arg-type]
            raise RuntimeError("boom")
