"""Fixtures for the TEE backend tests: one emulated installation per test session (RSA-4096 keys are slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend


@pytest.fixture(scope="session")
def tee_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose emulated roots are generated once for the whole session."""
    return tmp_path_factory.mktemp("tee-data")


@pytest.fixture(scope="session")
def snp_backend(tee_data_dir: Path) -> EmulatedSnpBackend:
    """An emulated SEV-SNP guest "launched" with host data 0x11…"""
    return EmulatedSnpBackend(tee_data_dir, host_data=b"\x11" * 32)


@pytest.fixture(scope="session")
def tdx_backend(tee_data_dir: Path) -> EmulatedTdxBackend:
    """An emulated TD "launched" with MRCONFIGID 0x22…"""
    return EmulatedTdxBackend(tee_data_dir, mr_config_id=b"\x22" * 32)
