"""Emulation is opt-in: what the embedded default accepts, and the first line that says so."""

from __future__ import annotations

import pytest

from ccpipe.pipeline.cli import up
from ccpipe.schemas.config import Settings


def test_settings_refuse_emulated_evidence_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCPIPE_ALLOW_EMULATED", raising=False)
    assert Settings().allow_emulated is False


def test_embedded_default_without_a_tee_accepts_emulation_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCPIPE_ALLOW_EMULATED", raising=False)
    monkeypatch.setattr(up, "hardware_backend", lambda: None)
    settings, line = up.embedded_emulation(Settings())
    assert settings.allow_emulated
    assert line == "emulated TEE evidence is accepted: this machine has no TEE; use --production to refuse it"


def test_embedded_default_on_a_tee_refuses_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCPIPE_ALLOW_EMULATED", raising=False)
    monkeypatch.setattr(up, "hardware_backend", lambda: "sev-guest")
    settings, line = up.embedded_emulation(Settings())
    assert not settings.allow_emulated and "refused: this machine has a TEE (sev-guest)" in line


def test_production_refuses_emulation_whatever_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCPIPE_ALLOW_EMULATED", "true")
    monkeypatch.setattr(up, "hardware_backend", lambda: None)
    explicit, line = up.embedded_emulation(Settings())
    assert explicit.allow_emulated and "CCPIPE_ALLOW_EMULATED" in line
    production, line = up.embedded_emulation(Settings(), production=True)
    assert not production.allow_emulated and line.startswith("emulated TEE evidence is refused (--production)")
