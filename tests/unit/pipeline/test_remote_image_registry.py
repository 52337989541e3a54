"""Which registry ``ccpipe sign|verify docker://…`` sends the pipeline's credentials to."""

from __future__ import annotations

import os
from pathlib import Path

from ccpipe.pipeline.cli.remote_image import pipeline_registry
from ccpipe.pipeline.services import Endpoints, write_endpoints
from ccpipe.schemas.config import Settings


def test_the_configured_registry_comes_first(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, registry="registry.example:5000")
    write_endpoints(settings, Endpoints(nats_url="nats://127.0.0.1:4222", registry="127.0.0.1:5001", pid=os.getpid()))
    assert pipeline_registry(settings) == "registry.example:5000"


def test_else_the_embedded_registry_of_a_running_up(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert pipeline_registry(settings) is None  # nothing runs: no registry is the pipeline's
    write_endpoints(settings, Endpoints(nats_url="nats://127.0.0.1:4222", registry="127.0.0.1:5001", pid=os.getpid()))
    assert pipeline_registry(settings) == "127.0.0.1:5001"


def test_not_the_registry_a_stopped_up_left_in_its_endpoints(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    gone = 2**22 + 1  # above the largest pid Linux hands out (pid_max is at most 2**22)
    write_endpoints(settings, Endpoints(nats_url="nats://127.0.0.1:4222", registry="127.0.0.1:5001", pid=gone))
    assert pipeline_registry(settings) is None
