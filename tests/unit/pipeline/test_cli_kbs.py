"""``ccpipe kbs serve`` refuses bad arguments with exit code 2 and a sentence naming them."""

from __future__ import annotations

import pytest

from ccpipe.pipeline.cli.main import main


@pytest.mark.parametrize(("args", "said"), [
    (["--workers", "0"], "--workers 0: at least one worker is needed"),
    (["--workers", "-3"], "--workers -3"),
    (["--port", "99999"], "--port 99999 is not a TCP port"),
    (["--port", "-1"], "--port -1 is not a TCP port"),
    (["--auth-per-minute", "-5"], "--auth-per-minute -5 is negative"),
])
def test_kbs_serve_bad_arguments(args: list[str], said: str, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCPIPE_NATS_URL", raising=False)  # checked before anything is looked up
    assert main(["kbs", "serve", *args]) == 2
    assert said in capsys.readouterr().err
