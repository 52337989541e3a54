"""The emulated roots: generated once, 0600 keys, "emulated" subjects, AMD/Intel-shaped chains."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from ccpipe.enclave_runner.tee.emulated_pki import (
    emulated_anchors,
    is_emulated_certificate,
    snp_store,
    tdx_store,
)
from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.evidence.cert_extensions import pck_extensions, vcek_extensions
from ccpipe.evidence.emulated_roots import pki_dir
from ccpipe.evidence.errors import EmulatedPkiError
from tests.conftest import vector
from tests.unit.evidence.evidence_helpers import anchor_cert, verify_ecdsa_cert, verify_pss


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_0600_and_directories_0700(tee_data_dir: Path, snp_backend: object, tdx_backend: object) -> None:
    root = pki_dir(tee_data_dir)
    assert _mode(root) == 0o700
    keys = sorted(root.rglob("*.key"))
    assert {k.name for k in keys} >= {"ark.key", "ask.key", "vcek.key", "pck.key", "attestation.key", "tcb-signing.key"}
    assert all(_mode(k) == 0o600 for k in keys)
    assert all(_mode(d) == 0o700 for d in (root / "snp", root / "tdx"))


def test_roots_are_generated_once(tee_data_dir: Path, snp_backend: object) -> None:
    first = snp_store(tee_data_dir).cert("ark")
    again = EmulatedSnpBackend(tee_data_dir)
    assert again.describe().emulated
    assert snp_store(tee_data_dir).cert("ark") == first


def test_every_subject_says_emulated(tee_data_dir: Path, snp_backend: object, tdx_backend: object) -> None:
    certs = [snp_store(tee_data_dir).cert(s) for s in ("ark", "ask", "vcek")]
    certs += [tdx_store(tee_data_dir).cert(s) for s in ("root-ca", "pck-ca", "pck", "tcb-signing")]
    for cert in certs:
        assert "emulated" in cert.subject.rfc4514_string().lower()
        assert is_emulated_certificate(cert)
    real = x509.load_pem_x509_certificates(vector("go-sev-guest", "milan.testcer").read_bytes())
    assert not any(is_emulated_certificate(c) for c in real)


def test_snp_chain_is_rsa_pss_like_amds(tee_data_dir: Path, snp_backend: object) -> None:
    store = snp_store(tee_data_dir)
    ark, ask, vcek = (store.cert(s) for s in ("ark", "ask", "vcek"))
    verify_pss(ark, ark)
    verify_pss(ask, ark)
    verify_pss(vcek, ask)
    assert ark.public_key().key_size == 4096  # type: ignore[union-attr]
    assert vcek.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"  # rsassaPss


def test_vcek_extensions_certify_the_platform(tee_data_dir: Path, snp_backend: EmulatedSnpBackend) -> None:
    ext = vcek_extensions(snp_store(tee_data_dir).cert("vcek"))
    report = snp_backend.report(b"x")
    assert ext.hw_id == report.chip_id and any(report.chip_id)
    assert ext.matches(report.reported_tcb)
    assert ext.product_name == report.product == "Genoa"


def test_tdx_chain_and_pck_extension(tee_data_dir: Path, tdx_backend: object) -> None:
    store = tdx_store(tee_data_dir)
    root, ca, pck, tcb = (store.cert(s) for s in ("root-ca", "pck-ca", "pck", "tcb-signing"))
    verify_ecdsa_cert(root, root)
    verify_ecdsa_cert(ca, root)
    verify_ecdsa_cert(pck, ca)
    verify_ecdsa_cert(tcb, root)
    ext = pck_extensions(pck)
    assert ext.fmspc.hex() == store.platform()["fmspc"] and ext.pce_id == b"\x00\x00"
    assert "Platform CA" in ca.subject.rfc4514_string()


def test_anchors_are_the_roots_and_separate_from_vendor_roots(tee_data_dir: Path) -> None:
    anchors = emulated_anchors(tee_data_dir)
    ark = anchor_cert(anchors.snp_ark_pem)
    root = anchor_cert(anchors.tdx_root_ca_pem)
    tcb = anchor_cert(anchors.tdx_tcb_signing_pem)
    assert ark == snp_store(tee_data_dir).cert("ark") and ark.subject == ark.issuer
    assert root.subject == root.issuer and tcb.issuer == root.subject
    intel_root = x509.load_pem_x509_certificate(vector("go-tdx-guest", "trusted_root.pem").read_bytes())
    assert root.public_key() != intel_root.public_key()


def test_group_readable_key_is_refused(tmp_path: Path, tee_data_dir: Path, tdx_backend: object) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tee_data_dir / "tee", copy / "tee")
    key = pki_dir(copy) / "tdx" / "attestation.key"
    os.chmod(key, 0o640)
    with pytest.raises(EmulatedPkiError, match="accessible to other users") as info:
        EmulatedTdxBackend(copy)
    assert "chmod 600" in info.value.hint


def test_corrupt_store_is_a_configuration_error(tmp_path: Path, tee_data_dir: Path, tdx_backend: object) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tee_data_dir / "tee", copy / "tee")
    (pki_dir(copy) / "tdx" / "pck.pem").write_text("garbage")
    with pytest.raises(EmulatedPkiError, match="pck.pem is unreadable"):
        EmulatedTdxBackend(copy)
    (pki_dir(copy) / "tdx" / "platform.json").write_text("[]")
    with pytest.raises(EmulatedPkiError, match="not a JSON object"):
        tdx_store(copy).platform()


def test_concurrent_first_use_shares_one_root(tmp_path: Path) -> None:
    stores = []

    def create() -> None:
        stores.append(tdx_store(tmp_path).cert("root-ca"))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 4 and all(s == stores[0] for s in stores)
    assert [p.name for p in pki_dir(tmp_path).iterdir()] == ["tdx"]  # no temporary directory left behind


def test_unwritable_data_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmulatedPkiError, match="cannot create"):
        tdx_store(blocker)


def test_anchors_without_create_never_generate_roots(tmp_path: Path, tee_data_dir: Path, snp_backend: object) -> None:
    anchors = emulated_anchors(tmp_path, create=False)
    assert anchors == type(anchors)(None, None, None, None)
    assert not pki_dir(tmp_path).exists()
    existing = emulated_anchors(tee_data_dir, create=False)
    assert existing.snp_ark_pem == emulated_anchors(tee_data_dir).snp_ark_pem is not None


@pytest.mark.parametrize(
    ("tee", "key", "value"),
    [("snp", "chip_id", "abcd"), ("snp", "cpuid", None), ("tdx", "tee_tcb_svn", "00"), ("tdx", "qe_mrsigner", "zz")],
)
def test_damaged_platform_description_is_a_configuration_error(
    tmp_path: Path, tee_data_dir: Path, snp_backend: object, tdx_backend: object, tee: str, key: str, value: object
) -> None:
    import json
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tee_data_dir / "tee", copy / "tee")
    platform_file = pki_dir(copy) / tee / "platform.json"
    platform = json.loads(platform_file.read_text())
    platform[key] = value
    platform_file.write_text(json.dumps(platform))
    backend = EmulatedSnpBackend if tee == "snp" else EmulatedTdxBackend
    with pytest.raises(EmulatedPkiError, match="is not an emulated"):
        backend(copy)
