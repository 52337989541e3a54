"""Emulated TDX: a DCAP quote v4 a DCAP verifier accepts with the emulated root and collateral."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ccpipe.enclave_runner.tee.emulated_pki import emulated_anchors
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.enclave_runner.tee.emulated_tdx_collateral import emulated_tdx_collateral
from ccpipe.evidence.cert_extensions import pck_extensions
from ccpipe.evidence.errors import InvalidReportData
from ccpipe.evidence.measurement import tdx_measurements_for
from ccpipe.evidence.tdx_quote import INTEL_QE_VENDOR_ID, parse_tdx_evidence, parse_tdx_quote
from ccpipe.schemas.spec_rules import TeeType
from tests.unit.evidence.evidence_helpers import (
    anchor_cert,
    p256_point,
    read_vector,
    verify_dcap_quote,
    verify_ecdsa_cert,
    verify_p256_raw,
)

NONCE_DIGEST = bytes(range(48))


def test_evidence_is_trustee_tdx_json(tdx_backend: EmulatedTdxBackend) -> None:
    result = tdx_backend.get_evidence(NONCE_DIGEST)
    doc = json.loads(result.evidence)
    assert set(doc) == {"cc_eventlog", "quote"} and doc["cc_eventlog"] is None
    assert (result.tee, result.backend, result.emulated) == (TeeType.TDX, "emulated", True)
    quote = parse_tdx_quote(parse_tdx_evidence(result.evidence).quote)
    assert quote.td_body.report_data == result.report_data == NONCE_DIGEST + bytes(16)


def test_quote_signatures_and_binding_verify(tdx_backend: EmulatedTdxBackend) -> None:
    raw = tdx_backend.quote(NONCE_DIGEST).serialize()
    verify_dcap_quote(raw)  # independent offsets: quote sig, QE binding, QE report sig by PCK
    quote = parse_tdx_quote(raw)
    assert (quote.version, quote.header.tee_type, quote.header.qe_vendor_id) == (4, 0x81, INTEL_QE_VENDOR_ID)
    assert quote.serialize() == raw and quote.trailing == b""


def test_pck_chain_ends_at_the_emulated_root(tee_data_dir: Path, tdx_backend: EmulatedTdxBackend) -> None:
    pck, ca, root = x509.load_pem_x509_certificates(tdx_backend.quote(b"").pck_chain_pem)
    anchor = anchor_cert(emulated_anchors(tee_data_dir).tdx_root_ca_pem)
    assert root == anchor
    verify_ecdsa_cert(pck, ca)
    verify_ecdsa_cert(ca, anchor)


def test_tampered_report_data_fails_the_quote_signature(tdx_backend: EmulatedTdxBackend) -> None:
    raw = bytearray(tdx_backend.quote(NONCE_DIGEST).serialize())
    raw[48 + 520] ^= 1
    with pytest.raises(InvalidSignature):
        verify_dcap_quote(bytes(raw))


def test_quote_carries_measurements_and_mr_config_id(tee_data_dir: Path, tdx_backend: EmulatedTdxBackend) -> None:
    body = tdx_backend.quote(NONCE_DIGEST).td_body
    assert (body.mr_td, body.rtmrs) == (tdx_measurements_for().mr_td, tdx_measurements_for().rtmrs)
    assert body.mr_config_id == b"\x22" * 32 + bytes(16)
    assert tdx_backend.quote(b"", host_data=b"\x44" * 48).td_body.mr_config_id == b"\x44" * 48
    assert not body.debug
    other = EmulatedTdxBackend(tee_data_dir, config=b"other")
    assert other.measurements.rtmrs[2] != tdx_backend.measurements.rtmrs[2]


def test_oversized_mr_config_id_is_refused(tdx_backend: EmulatedTdxBackend) -> None:
    with pytest.raises(InvalidReportData, match="mr_config_id"):
        tdx_backend.get_evidence(b"", host_data=bytes(49))


def _signed_value(body: str, key: str) -> tuple[bytes, bytes]:
    """The exact text of ``key``'s value in a PCS body and its signature, as a verifier must extract them."""
    start = body.index(f'"{key}":') + len(key) + 3
    end = body.rindex(',"signature":')
    return body[start:end].encode(), bytes.fromhex(json.loads(body)["signature"])


@pytest.fixture(scope="module")
def collateral(tee_data_dir: Path, tdx_backend: EmulatedTdxBackend) -> Any:
    return emulated_tdx_collateral(tee_data_dir, now=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC))


def test_collateral_is_signed_by_the_tcb_signing_key_of_the_emulated_root(collateral: Any) -> None:
    tcb_cert, root = x509.load_pem_x509_certificates(collateral.tcb_info_issuer_chain.encode())
    assert root == x509.load_pem_x509_certificate(collateral.root_ca_pem.encode())
    verify_ecdsa_cert(tcb_cert, root)
    for body, key in ((collateral.tcb_info, "tcbInfo"), (collateral.qe_identity, "enclaveIdentity")):
        text, signature = _signed_value(body, key)
        verify_p256_raw(p256_point(tcb_cert), signature, text)
        with pytest.raises(InvalidSignature):
            verify_p256_raw(p256_point(tcb_cert), signature, text.replace(b"UpToDate", b"UpToDatf"))


def _keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items() if k not in ("advisoryIDs", "category", "type")}
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return type(value).__name__


def test_collateral_has_the_shape_of_intels_pcs_responses(collateral: Any) -> None:
    intel_tcb = json.loads(read_vector("go-tdx-guest", "sample_tcbInfo_response"))
    intel_qe = json.loads(read_vector("go-tdx-guest", "sample_qeIdentity_response"))
    assert _keys(json.loads(collateral.tcb_info)) == _keys(intel_tcb)
    assert _keys(json.loads(collateral.qe_identity)) == _keys(intel_qe)
    info = json.loads(collateral.tcb_info)["tcbInfo"]
    assert (info["issueDate"], info["nextUpdate"]) == ("2030-01-02T03:04:05Z", "2030-02-01T03:04:05Z")


def test_tcb_info_up_to_date_level_matches_the_quote(collateral: Any, tdx_backend: EmulatedTdxBackend) -> None:
    quote = tdx_backend.quote(b"")
    pck = pck_extensions(x509.load_pem_x509_certificates(quote.pck_chain_pem)[0])
    info = json.loads(collateral.tcb_info)["tcbInfo"]
    assert info["fmspc"] == pck.fmspc.hex() and info["pceId"] == pck.pce_id.hex()
    # Intel's rule: the first level whose SGX components, PCESVN and TDX components are all <= the platform's.
    for level in info["tcbLevels"]:
        tcb = level["tcb"]
        sgx_ok = all(c["svn"] <= p for c, p in zip(tcb["sgxtcbcomponents"], pck.sgx_tcb_components, strict=True))
        tdx_ok = all(c["svn"] <= q for c, q in zip(tcb["tdxtcbcomponents"], quote.td_body.tee_tcb_svn, strict=True))
        if sgx_ok and tcb["pcesvn"] <= pck.pce_svn and tdx_ok:
            assert level["tcbStatus"] == "UpToDate"
            break
    else:
        pytest.fail("no TCB level matches the emulated platform")


def test_qe_identity_matches_the_qe_report(collateral: Any, tdx_backend: EmulatedTdxBackend) -> None:
    qe = tdx_backend.quote(b"").qe_report
    ident = json.loads(collateral.qe_identity)["enclaveIdentity"]
    assert bytes.fromhex(ident["mrsigner"]) == qe.mr_signer and ident["isvprodid"] == qe.isv_prod_id
    mask = bytes.fromhex(ident["attributesMask"])
    assert bytes(a & m for a, m in zip(qe.attributes, mask, strict=True)) == bytes.fromhex(ident["attributes"])
    assert ident["tcbLevels"][0]["tcb"]["isvsvn"] <= qe.isv_svn


def test_crls_are_signed_by_their_issuers_and_empty(collateral: Any) -> None:
    ca, root = x509.load_pem_x509_certificates(collateral.pck_crl_issuer_chain.encode())
    for der, issuer in ((collateral.pck_crl, ca), (collateral.root_ca_crl, root)):
        crl = x509.load_der_x509_crl(der)
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        assert len(crl) == 0 and crl.issuer == issuer.subject
