"""TDX verifier against the real quotes (trustee, go-tdx-guest) and offline Intel collateral.

Times are fixed per vector as SOURCES.md states (collateral windows of 2023 for FMSPC
50806f000000; 2026-02-03 for the v5 sample). The TCB Signing certificate shipped with the
vectors expired on 2025-05-21 and Intel re-issued it with the same key, so vectors whose
collateral is newer are checked with ``allow_expired_collateral_signer``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ccpipe.stages.attest.errors import (
    AttestationError,
    AttestationKeyBindingInvalid,
    CertificateChainInvalid,
    CertificateExpired,
    CollateralExpired,
    CollateralInvalid,
    CollateralMissing,
    DebugNotAllowed,
    EvidenceMalformed,
    EvidenceSignatureInvalid,
    EvidenceUnsupported,
    InitDataMismatch,
    MeasurementMismatch,
    ReportDataMismatch,
    TcbLevelNotSupported,
    TcbTooLow,
)
from ccpipe.stages.attest.verifiers import Binding, TdxCollateral, TdxPolicy, VerifierConfig, verifier_for
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier, parse_tdx_quote
from tests.unit.stages.attest.verifiers.verifier_helpers import at, flip, read

G = "go-tdx-guest"
QUOTE_4 = ("trustee", "tdx/tdx_quote_4.dat")
QUOTE_5 = ("trustee", "tdx/tdx_quote_5.dat")
QUOTE_6 = ("trustee", "tdx/tdx_quote_6.dat")
V5_SAMPLE = (G, "quote_v5_sample.dat")
SPR_E4 = (G, "tdx_prod_quote_SPR_E4.dat")
JULY_2023 = at(2023, 7, 1)


def collateral() -> dict[str, TdxCollateral]:
    chain = read(G, "tcb_info_issuer_chain.pem")
    qe_2023 = read(G, "sample_qeIdentity_response")
    qe_2025 = read("trustee", "tdx/enclaveIdentity.json")
    return {
        "50806f000000": TdxCollateral(
            read(G, "sample_tcbInfo_response"), qe_2023, chain, read(G, "pckcrl"), read(G, "rootcrl.der")
        ),
        "90c06f000000": TdxCollateral(read(G, "sample_tcbinfo_response_v5"), qe_2025, chain),
        "00a06d080000": TdxCollateral(read("trustee", "tdx/tcbInfo.json"), qe_2025, chain),
    }


def verifier(now: datetime = JULY_2023, coll: dict[str, TdxCollateral] | None = None, **policy: Any) -> TdxVerifier:
    cfg = VerifierConfig(now=now, tdx=TdxPolicy(**policy))
    return TdxVerifier(cfg, collateral=collateral() if coll is None else coll)


def binding_of(raw: bytes) -> Binding:
    return Binding(report_data=parse_tdx_quote(raw).td_body.report_data)


# --- tdx_quote_4 + go-tdx-guest collateral: UpToDate, but a debug TD -------------------------


def test_quote4_is_a_debug_td_and_rejected_by_default() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises(DebugNotAllowed, match="DEBUG"):
        verifier().verify(raw, binding_of(raw))


def test_quote4_up_to_date_when_debug_allowed() -> None:
    raw = read(*QUOTE_4)
    claims = verifier(allow_debug=True).verify(raw, binding_of(raw))
    assert claims.tcb["tcb_status"] == "UpToDate"
    assert claims.tcb["tcb_date"] == "2023-02-15T00:00:00Z"
    assert claims.tcb["collateral_expiration_status"] == "0"
    assert claims.debug is True and claims.product == "TDX 1.0"


def test_quote4_claims_match_trustee_golden_claims() -> None:
    raw = read(*QUOTE_4)
    golden = json.loads(read("trustee", "tdx/parse_tdx_claims_expected.json"))
    claims = verifier(allow_debug=True).verify(raw, binding_of(raw)).fields
    assert claims["quote"]["header"] == golden["quote"]["header"]
    for key, value in golden["quote"]["body"].items():
        assert claims["quote"]["body"][key] == value, key
    assert claims["td_attributes"] == golden["td_attributes"]
    assert claims["report_data"] == golden["report_data"]
    assert claims["init_data"] == golden["init_data"]


def test_quote4_as_trustee_evidence_json() -> None:
    raw = read(*QUOTE_4)
    ev = json.dumps({"quote": base64.b64encode(raw).decode(), "cc_eventlog": None}).encode()
    assert verifier(allow_debug=True).verify(ev, binding_of(raw)).tcb["tcb_status"] == "UpToDate"


def test_wrong_report_data_is_rejected() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises(ReportDataMismatch):
        verifier(allow_debug=True).verify(raw, Binding(report_data=b"\x00" * 48))


def test_expected_mrtd_accepts_and_rejects() -> None:
    raw = read(*QUOTE_4)
    mr_td = parse_tdx_quote(raw).td_body.mr_td
    v = verifier(allow_debug=True)
    v.verify(raw, Binding(report_data=parse_tdx_quote(raw).td_body.report_data, measurement=mr_td))
    with pytest.raises(MeasurementMismatch):
        v.verify(raw, Binding(report_data=parse_tdx_quote(raw).td_body.report_data, measurement=bytes(48)))


def test_flipped_body_byte_breaks_the_quote_signature() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises(EvidenceSignatureInvalid, match="quote signature"):
        verifier(allow_debug=True).verify(flip(raw, 48 + 136), binding_of(raw))


def test_flipped_qe_report_byte_breaks_the_qe_signature() -> None:
    raw = read(*QUOTE_4)
    qe_report_offset = 48 + 584 + 4 + 64 + 64 + 2 + 4
    with pytest.raises(EvidenceSignatureInvalid, match="QE report"):
        verifier(allow_debug=True).verify(flip(raw, qe_report_offset + 100), binding_of(raw))


def test_changed_qe_auth_data_breaks_the_attestation_key_binding() -> None:
    raw = read(*QUOTE_4)
    auth_offset = 48 + 584 + 4 + 64 + 64 + 2 + 4 + 384 + 64 + 2
    with pytest.raises(AttestationKeyBindingInvalid):
        verifier(allow_debug=True).verify(flip(raw, auth_offset), binding_of(raw))


def test_changed_attestation_key_breaks_the_binding() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises((AttestationKeyBindingInvalid, EvidenceSignatureInvalid)):
        verifier(allow_debug=True).verify(flip(raw, 48 + 584 + 4 + 64 + 5), binding_of(raw))


def test_pck_certificate_not_yet_valid_or_expired() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises(CertificateExpired):
        verifier(now=at(2053, 7, 1), allow_debug=True).verify(raw, binding_of(raw))


def with_pck_chain(raw: bytes, chain: bytes) -> bytes:
    """A v4 quote with its PCK chain replaced (all enclosing sizes rewritten)."""
    import struct

    sig_at = 48 + 584
    cert_at = sig_at + 4 + 128
    qe_at = cert_at + 6
    auth_len = struct.unpack_from("<H", raw, qe_at + 384 + 64)[0]
    pck_at = qe_at + 384 + 64 + 2 + auth_len
    inner = raw[qe_at:pck_at] + struct.pack("<HI", 5, len(chain)) + chain
    sig = raw[sig_at + 4 : cert_at] + struct.pack("<HI", 6, len(inner)) + inner
    return raw[:sig_at] + struct.pack("<I", len(sig)) + sig


def test_pck_chain_to_another_root_is_rejected() -> None:
    raw = read(*QUOTE_4)
    end = b"-----END CERTIFICATE-----\n"
    pck, ca, _root = [c + end for c in parse_tdx_quote(raw).pck_chain_pem.split(end)[:3]]
    v = verifier(allow_debug=True)
    assert v.verify(with_pck_chain(raw, pck + ca + _root), binding_of(raw))
    with pytest.raises(CertificateChainInvalid, match="Intel SGX Root CA"):
        v.verify(with_pck_chain(raw, pck + ca + ca), binding_of(raw))
    with pytest.raises(CertificateChainInvalid, match="3"):
        v.verify(with_pck_chain(raw, pck + _root), binding_of(raw))


def test_tampered_tcb_info_signature_is_rejected() -> None:
    coll = collateral()
    c = coll["50806f000000"]
    # Any change to the signed tcbInfo bytes (here: the evaluation number) breaks the signature.
    tampered = c.tcb_info.replace(b'"tcbEvaluationDataNumber":15', b'"tcbEvaluationDataNumber":16')
    assert tampered != c.tcb_info
    coll["50806f000000"] = TdxCollateral(tampered, c.qe_identity, c.tcb_signing_chain, c.pck_crl, c.root_crl)
    raw = read(*QUOTE_4)
    with pytest.raises(CollateralInvalid, match="signature"):
        verifier(coll=coll, allow_debug=True).verify(raw, binding_of(raw))


def test_pck_crl_of_the_wrong_issuer_is_rejected() -> None:
    coll = collateral()
    c = coll["50806f000000"]
    coll["50806f000000"] = TdxCollateral(c.tcb_info, c.qe_identity, c.tcb_signing_chain, c.root_crl, c.root_crl)
    raw = read(*QUOTE_4)
    with pytest.raises(CertificateChainInvalid, match="CRL"):
        verifier(coll=coll, allow_debug=True).verify(raw, binding_of(raw))


def test_expired_collateral_rejected_or_reported() -> None:
    raw = read(*QUOTE_4)
    late = at(2023, 8, 1)
    with pytest.raises(CollateralExpired, match="expired"):
        verifier(now=late, allow_debug=True).verify(raw, binding_of(raw))
    claims = verifier(now=late, allow_debug=True, expired_collateral="report").verify(raw, binding_of(raw))
    assert claims.tcb["collateral_expiration_status"] == "1"


def test_missing_collateral() -> None:
    raw = read(*QUOTE_4)
    with pytest.raises(CollateralMissing, match="50806f000000"):
        verifier(coll={}, allow_debug=True).verify(raw, binding_of(raw))
    claims = verifier(coll={}, allow_debug=True, require_collateral=False).verify(raw, binding_of(raw))
    assert claims.tcb["tcb_status"] == "Unknown"


def test_collateral_directory_via_registry(tmp_path: Path) -> None:
    c = collateral()["50806f000000"]
    d = tmp_path / "50806f000000"
    d.mkdir()
    (d / "tcb_info.json").write_bytes(c.tcb_info)
    (tmp_path / "qe_identity.json").write_bytes(c.qe_identity)
    (tmp_path / "tcb_signing_chain.pem").write_bytes(c.tcb_signing_chain)
    (d / "pck_crl.der").write_bytes(c.pck_crl or b"")
    cfg = VerifierConfig(now=JULY_2023, tdx=TdxPolicy(allow_debug=True, collateral_dir=tmp_path))
    raw = read(*QUOTE_4)
    assert verifier_for("tdx", cfg).verify(raw, binding_of(raw)).tcb["tcb_status"] == "UpToDate"


# --- go-tdx-guest production quote: no TCB level matches -------------------------------------


def test_spr_e4_quote_has_no_matching_tcb_level() -> None:
    raw = read(*SPR_E4)
    with pytest.raises(TcbLevelNotSupported):
        verifier().verify(raw, binding_of(raw))


# --- v5 quotes ------------------------------------------------------------------------------


def v5_verifier(**policy: Any) -> TdxVerifier:
    return verifier(now=at(2026, 2, 3), allow_expired_collateral_signer=True, expired_collateral="report", **policy)


def test_v5_sample_quote_is_up_to_date() -> None:
    raw = read(*V5_SAMPLE)
    claims = v5_verifier().verify(raw, binding_of(raw))
    assert claims.product == "TDX 1.5"
    assert claims.tcb["tcb_status"] == "UpToDate" and claims.tcb["tcb_date"] == "2024-11-13T00:00:00Z"
    assert claims.fields["quote"]["body"]["mr_servicetd"]


def test_v5_tcb_signing_certificate_expiry_is_enforced_by_default() -> None:
    raw = read(*V5_SAMPLE)
    with pytest.raises(CertificateExpired, match="TCB Signing"):
        verifier(now=at(2026, 2, 3), expired_collateral="report").verify(raw, binding_of(raw))


def test_trustee_v5_quote_has_no_matching_tcb_level() -> None:
    raw = read(*QUOTE_5)
    with pytest.raises(TcbLevelNotSupported):
        v5_verifier().verify(raw, binding_of(raw))


# --- tdx_quote_6: OutOfDate, and a non-zero MRCONFIGID (initdata digest) ---------------------


def q6_verifier(**policy: Any) -> TdxVerifier:
    return verifier(now=at(2025, 11, 1), allow_expired_collateral_signer=True, **policy)


def test_quote6_is_out_of_date_and_accepted_by_default_policy() -> None:
    raw = read(*QUOTE_6)
    claims = q6_verifier().verify(raw, binding_of(raw))
    assert claims.tcb["tcb_status"] == "OutOfDate"
    assert claims.tcb["tcb_date"] == "2018-01-04T00:00:00Z"
    assert claims.tcb["qe_tcb_status"] == "UpToDate"


def test_quote6_rejected_when_policy_requires_up_to_date() -> None:
    raw = read(*QUOTE_6)
    with pytest.raises(TcbTooLow, match="OutOfDate"):
        q6_verifier(accepted_tcb_statuses=("UpToDate",)).verify(raw, binding_of(raw))


def test_quote6_mrconfigid_binds_the_initdata_digest() -> None:
    raw = read(*QUOTE_6)
    mr_config_id = parse_tdx_quote(raw).td_body.mr_config_id
    digest = mr_config_id  # a SHA-384 initdata digest fills all 48 bytes
    assert any(digest)
    b = binding_of(raw)
    claims = q6_verifier().verify(raw, Binding(report_data=b.report_data, init_data_digest=digest))
    assert claims.init_data == mr_config_id.hex()
    with pytest.raises(InitDataMismatch, match="mr_config_id"):
        q6_verifier().verify(raw, Binding(report_data=b.report_data, init_data_digest=bytes(32)))


# --- quotes without collateral, SGX quotes, TDREPORTs, garbage ----------------------------------


@pytest.mark.parametrize(
    ("folder", "name", "report_data"),
    [
        (G, "ccel/cos-113-tdx-quote.dat", None),
        ("trustee", "az-tdx-vtpm/td-quote.bin", None),
    ],
)
def test_quotes_without_collateral_verify_signatures_only_when_allowed(
    folder: str, name: str, report_data: bytes | None
) -> None:
    raw = read(folder, name)
    expected = read(G, "ccel/nonce.dat") if name.startswith("ccel") else parse_tdx_quote(raw).td_body.report_data
    with pytest.raises(CollateralMissing):
        verifier(now=at(2025, 1, 1), coll={}).verify(raw, Binding(report_data=expected))
    claims = verifier(now=at(2025, 1, 1), coll={}, require_collateral=False).verify(raw, Binding(report_data=expected))
    assert claims.debug is False


def test_sgx_quote_is_rejected_by_the_tdx_verifier() -> None:
    with pytest.raises(EvidenceUnsupported, match="SGX quote"):
        verifier().verify(read("trustee", "sgx/occlum_quote.dat"), Binding(report_data=b"test"))


@pytest.mark.parametrize(("folder", "name"), [("guest-components", "attester/tdx_report_1.bin"), (G, "report.dat")])
def test_raw_tdreport_is_not_remotely_verifiable(folder: str, name: str) -> None:
    with pytest.raises(AttestationError):
        verifier().verify(read(folder, name), Binding(report_data=b""))


@pytest.mark.parametrize("evidence", [b"", b"\x04\x00", b"\x04\x00\x02\x00\x81", b"{}", b'{"quote": "!!"}', b"junk"])
def test_malformed_quotes(evidence: bytes) -> None:
    with pytest.raises(EvidenceMalformed):
        verifier().verify(evidence, Binding(report_data=b""))


def test_every_truncation_is_an_attestation_error() -> None:
    raw = read(*QUOTE_4)
    for n in list(range(0, 700, 7)) + list(range(700, len(raw), 61)):
        with pytest.raises(AttestationError):
            verifier(allow_debug=True).verify(raw[:n], binding_of(raw))


def test_evidence_nested_beyond_the_recursion_limit_is_malformed() -> None:
    # Found by tests/fuzz: the RecursionError of the JSON decoder escaped the verifier.
    with pytest.raises(EvidenceMalformed, match="neither a quote nor"):
        verifier().verify(b"[" * 100_000 + b"]" * 100_000, Binding(report_data=bytes(64)))
