"""Throwaway SoftHSM2 tokens for the PKCS#11 KEK tests (unit and integration)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ccpipe.stages.attest.kbs.kek_pkcs11 import reinitialize_modules

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


def init_tokens(root: Path, monkeypatch: pytest.MonkeyPatch, labels: tuple[str, ...], *, pin: str,
                so_pin: str) -> Path:
    """Fresh tokens ``labels`` under ``root`` (SoftHSM2 reads ``SOFTHSM2_CONF`` when initialised);
    returns a 0600 file holding the user ``pin``. Fails the test when SoftHSM2 is not installed."""
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM.is_file():
        pytest.fail("SoftHSM2 is not installed: run scripts/install-system-deps.sh (apt-get install softhsm2)")
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    for label in labels:
        subprocess.run([util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
                       check=True, capture_output=True)
    reinitialize_modules()  # a module loaded by an earlier test still points at its directory
    pin_file = root / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return pin_file
