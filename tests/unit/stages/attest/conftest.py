"""Fixtures of the attestation-service tests: a data directory whose emulated roots exist.

Creating the emulated SEV-SNP/TDX PKI costs seconds (RSA roots), so it is made once per session
and copied into each test's own directory: every test still has private keys and stores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee import select_backend
from ccpipe.evidence.emulated_roots import pki_dir


@pytest.fixture(scope="session")
def _emulated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("emulated-template")
    select_backend(d, prefer="emulated-snp").get_evidence(bytes(64))
    select_backend(d, prefer="emulated-tdx").get_evidence(bytes(64))
    return d


@pytest.fixture
def tee_dir(tmp_path: Path, _emulated_template: Path) -> Path:
    """A fresh data directory holding (a copy of) the session's emulated SNP and TDX roots."""
    d = tmp_path / "data"
    shutil.copytree(pki_dir(_emulated_template), pki_dir(d))
    return d
