"""The whole KBS with its KEK in a real SoftHSM2 token: an admin stores a key over HTTP, the
record sits sealed in the NATS KV bucket, an enclave gets the key over RCAR, and a restarted KBS
on the same token still releases it while the data directory's key file cannot open it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.client import fetch_resource
from ccpipe.stages.attest.kbs.errors import ResourceStoreError
from ccpipe.stages.attest.kbs.kek_pkcs11 import (
    CREATE_ENV,
    KEY_ENV,
    MODULE_ENV,
    PIN_FILE_ENV,
    TOKEN_ENV,
    Pkcs11Kek,
    reinitialize_modules,
)
from ccpipe.stages.attest.kbs.service import open_kbs, serve_http
from ccpipe.stages.attest.kbs.store import FileKek, unseal
from ccpipe.stages.attest.kbs.store_nats import BUCKET, kv_key
from ccpipe.stages.attest.rvps import sample_message
from tests.integration.stages.attest.test_kbs_rcar import register_requirements
from tests.softhsm import SOFTHSM, init_tokens

pytestmark = pytest.mark.integration
SECRET = b"\x5a" * 32


@pytest.fixture
def hsm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh SoftHSM2 token ``kbs-int`` and the KBS configured to use it (key made on first use)."""
    pin_file = init_tokens(tmp_path / "softhsm", monkeypatch, ("kbs-int",), pin="user-secret", so_pin="so-secret")
    for name, value in {MODULE_ENV: str(SOFTHSM), TOKEN_ENV: "kbs-int", PIN_FILE_ENV: str(pin_file),
                        KEY_ENV: "kbs-kek", CREATE_ENV: "true"}.items():
        monkeypatch.setenv(name, value)


def initdata_for(workload: str) -> bytes:
    """A minimal initdata document naming the workload."""
    text = f'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"ccpipe.toml" = "workload = \\"{workload}\\""\n'
    return text.encode()


async def test_kbs_pkcs11_end_to_end_and_after_restart(
        hsm_env: None, data_dir: Path, js: JetStreamContext, workload_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"ccpipe/{workload_id}/image-key"
    enclave = EmulatedSnpBackend(data_dir, host_data=initdata_digest(initdata_for(workload_id).decode()))
    kbs = await open_kbs(js, data_dir, allow_emulated=True)
    wrapper = kbs.admin.store.wrapper
    assert isinstance(wrapper, Pkcs11Kek)
    assert not (data_dir / "keys" / "kbs" / "kek").exists()  # no key file beside the token
    async with serve_http(kbs) as url:
        admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
        await admin.set_reference_values(sample_message({
            f"scope/{workload_id}/init_data_digest": [initdata_digest(initdata_for(workload_id).decode()).hex()],
            f"scope/{workload_id}/snp_launch_measurement": [enclave.measurement.hex()],
        }))
        await admin.set_resource(path, SECRET)
        await register_requirements(admin, workload_id)
        assert await fetch_resource(url, enclave, path, workload_id=workload_id, tee="snp",
                                    init_data=initdata_for(workload_id)) == SECRET
    record = (await (await js.key_value(BUCKET)).get(kv_key(path))).value
    assert record is not None and SECRET not in record and json.loads(record)["kek_id"] == wrapper.key_id
    with pytest.raises(ResourceStoreError, match="another KEK"):
        unseal(FileKek.for_data_dir(data_dir), path, record)
    # Restart: a new process state and a new KBS that must not create another key.
    reinitialize_modules()
    monkeypatch.setenv(CREATE_ENV, "false")
    again = await open_kbs(js, data_dir, allow_emulated=True)
    assert again.admin.store.wrapper.key_id == wrapper.key_id
    async with serve_http(again) as url:
        assert await fetch_resource(url, enclave, path, workload_id=workload_id, tee="snp",
                                    init_data=initdata_for(workload_id)) == SECRET
