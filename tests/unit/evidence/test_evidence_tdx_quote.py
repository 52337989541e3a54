"""The DCAP quote layout against real TDX (v4, v5) and SGX (v3) quotes: fields, round trips, signatures."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ccpipe.evidence.errors import MalformedEvidence, UnsupportedEvidence
from ccpipe.evidence.tdx_quote import (
    BODY_TYPE_TD15,
    INTEL_QE_VENDOR_ID,
    TD_BODY_LAYOUT,
    TdxEvidence,
    parse_dcap_quote,
    parse_tdx_evidence,
    parse_tdx_quote,
    serialize_tdx_quote,
    signed_portion,
)
from tests.unit.evidence.evidence_helpers import p256_point, read_vector, verify_ecdsa_cert, verify_p256_raw

TDX_QUOTES = {
    "spr-e4-v4": ("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat", 4, 39),
    "sample-v5": ("go-tdx-guest", "quote_v5_sample.dat", 5, 0),
    "trustee-4": ("trustee/tdx", "tdx_quote_4.dat", 4, 0),
    "trustee-5": ("trustee/tdx", "tdx_quote_5.dat", 5, 0),
    "trustee-6": ("trustee/tdx", "tdx_quote_6.dat", 4, 70),
    "azure-td": ("trustee/az-tdx-vtpm", "td-quote.bin", 4, 70),
    "cos-113": ("go-tdx-guest/ccel", "cos-113-tdx-quote.dat", 4, 3065),
}


@pytest.mark.parametrize("case", TDX_QUOTES.values(), ids=TDX_QUOTES.keys())
def test_real_quote_round_trips_with_trailing_bytes(case: tuple[str, str, int, int]) -> None:
    folder, name, version, trailing = case
    raw = read_vector(folder, name)
    quote = parse_tdx_quote(raw)
    assert quote.version == version
    assert len(quote.trailing) == trailing
    assert serialize_tdx_quote(quote) == raw
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID


@pytest.mark.parametrize("case", TDX_QUOTES.values(), ids=TDX_QUOTES.keys())
def test_real_quote_signatures_verify(case: tuple[str, str, int, int]) -> None:
    quote = parse_tdx_quote(read_vector(case[0], case[1]))
    verify_p256_raw(quote.attestation_key, quote.signature, quote.signed_portion())
    chain = x509.load_pem_x509_certificates(quote.pck_chain_pem)
    verify_p256_raw(p256_point(chain[0]), quote.qe_report_signature, quote.qe_report.serialize())
    verify_ecdsa_cert(chain[0], chain[1])
    import hashlib

    assert quote.qe_report.report_data[:32] == hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()


def test_spr_e4_fields_match_sources() -> None:
    quote = parse_tdx_quote(read_vector("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat"))
    body = quote.td_body
    assert body.mr_td.hex() == (
        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
    )
    assert body.td_attributes.hex() == "0000004000000000"
    assert body.tee_tcb_svn.hex().startswith("03000400")
    assert body.report_data.hex().startswith("6c62dec1") and body.report_data.hex().endswith("281f1113")
    assert quote.qe_report.isv_svn == 4
    assert quote.qe_report.mr_signer.hex().upper().startswith("DC9E2A7C6F948F17")
    assert not body.debug


def test_trustee_quote_4_is_a_debug_td_with_the_listed_registers() -> None:
    body = parse_tdx_quote(read_vector("trustee/tdx", "tdx_quote_4.dat")).td_body
    assert body.debug
    assert body.td_attributes.hex() == "0100001000000000"
    assert body.xfam.hex() == "e742060000000000"
    assert body.mr_td.hex().startswith("705ee938") and body.mr_td.hex().endswith("9ce5f031")
    assert body.mr_seam.hex().startswith("2fd279c1")
    assert body.rtmr0.hex().startswith("e940da7c") and body.rtmr1.hex().startswith("559cfcf4")
    assert body.rtmr2 == bytes(48) == body.rtmr3 and body.mr_config_id == bytes(48)
    assert body.report_data.hex().startswith("7c71fe2c") and body.report_data.hex().endswith("71501429")


def test_trustee_quote_6_carries_an_initdata_mr_config_id() -> None:
    body = parse_tdx_quote(read_vector("trustee/tdx", "tdx_quote_6.dat")).td_body
    assert body.mr_config_id.hex().startswith("889abf47") and body.mr_config_id.hex().endswith("b150ed67")


def test_v5_sample_is_td15_with_its_second_tcb_svn() -> None:
    quote = parse_tdx_quote(read_vector("go-tdx-guest", "quote_v5_sample.dat"))
    assert quote.body_type == BODY_TYPE_TD15 and quote.body_offset == 54
    body = quote.td_body
    assert body.tee_tcb_svn.hex().startswith("0b010400") and body.tee_tcb_svn2 is not None
    assert body.tee_tcb_svn2.hex().startswith("0d010400")
    assert body.mr_td.hex().startswith("7348651a") and body.mr_td.hex().endswith("3bc8f876")
    assert body.td_attributes.hex() == "0000001000000000"
    assert quote.qe_report.isv_svn == 7


def test_ccel_quote_report_data_is_the_nonce() -> None:
    quote = parse_tdx_quote(read_vector("go-tdx-guest/ccel", "cos-113-tdx-quote.dat"))
    assert quote.td_body.report_data == read_vector("go-tdx-guest/ccel", "nonce.dat")
    assert quote.td_body.rtmr0.hex().startswith("3fa2f61f")


def test_signed_portion_of_raw_bytes_is_a_prefix() -> None:
    raw = read_vector("go-tdx-guest", "quote_v5_sample.dat")
    assert signed_portion(raw) == raw[: 54 + 648] == parse_tdx_quote(raw).signed_portion()


def test_sgx_v3_quote_parses_as_dcap_but_not_as_tdx() -> None:
    raw = read_vector("trustee/sgx", "occlum_quote.dat")
    quote = parse_dcap_quote(raw)
    assert quote.version == 3 and quote.serialize() == raw
    assert quote.body.mr_enclave.hex().startswith("8f173e4613ff05c5")  # type: ignore[union-attr]
    assert quote.body.report_data.startswith(b"test")
    verify_p256_raw(quote.attestation_key, quote.signature, quote.signed_portion())
    with pytest.raises(UnsupportedEvidence, match="SGX quote"):
        parse_tdx_quote(raw)


def test_layout_offsets_are_intels() -> None:
    offsets = {f.name: f.offset for f in TD_BODY_LAYOUT}
    assert (offsets["mr_td"], offsets["mr_config_id"], offsets["rtmr0"], offsets["report_data"]) == (136, 184, 328, 520)


def test_tampered_body_breaks_the_quote_signature() -> None:
    quote = parse_tdx_quote(read_vector("trustee/tdx", "tdx_quote_4.dat"))
    forged = dataclasses.replace(quote, body=dataclasses.replace(quote.td_body, report_data=bytes(64)))
    with pytest.raises(InvalidSignature):
        verify_p256_raw(forged.attestation_key, forged.signature, forged.signed_portion())


@pytest.mark.parametrize("cut", [0, 47, 48 + 583, 48 + 584 + 3, 1000, 4935])
def test_truncated_quote_is_malformed(cut: int) -> None:
    raw = read_vector("trustee/tdx", "tdx_quote_4.dat")
    with pytest.raises(MalformedEvidence, match="truncated"):
        parse_tdx_quote(raw[:cut])


@pytest.mark.parametrize(
    ("offset", "value", "error", "message"),
    [
        (0, b"\x06\x00", UnsupportedEvidence, "version 6"),
        (2, b"\x03\x00", UnsupportedEvidence, "key type 3"),
        (4, b"\x00\x00\x00\x00", UnsupportedEvidence, "TEE type 0x0"),
        (48 + 584 + 4 + 128, b"\x05\x00", UnsupportedEvidence, "certification data type 5"),
        (48 + 584, b"\xff\x00\x00\x00", MalformedEvidence, "truncated|inconsistent"),
    ],
    ids=["version", "key-type", "tee-type", "cert-type", "sig-length"],
)
def test_bad_header_fields_are_refused(offset: int, value: bytes, error: type[Exception], message: str) -> None:
    raw = bytearray(read_vector("trustee/tdx", "tdx_quote_4.dat"))
    raw[offset : offset + len(value)] = value
    with pytest.raises(error, match=message):
        parse_tdx_quote(bytes(raw))


def test_v5_with_unknown_body_type_is_unsupported() -> None:
    raw = bytearray(read_vector("go-tdx-guest", "quote_v5_sample.dat"))
    raw[48:50] = b"\x01\x00"
    with pytest.raises(UnsupportedEvidence, match="body type 1"):
        parse_tdx_quote(bytes(raw))


def test_tdx_evidence_json_round_trip_and_errors() -> None:
    raw = read_vector("trustee/tdx", "tdx_quote_4.dat")
    doc = json.loads(TdxEvidence(raw, b"log").to_bytes())
    assert doc == {"cc_eventlog": base64.b64encode(b"log").decode(), "quote": base64.b64encode(raw).decode()}
    assert parse_tdx_evidence(json.dumps(doc)) == TdxEvidence(raw, b"log")
    assert parse_tdx_evidence({"quote": doc["quote"], "cc_eventlog": None}).cc_eventlog is None
    for bad in (b"{}", b'{"quote": "***"}', b'{"quote": "AA==", "cc_eventlog": 5}', b"[1]", b"nope"):
        with pytest.raises(MalformedEvidence):
            parse_tdx_evidence(bad)


def test_evidence_json_nested_beyond_the_recursion_limit_is_malformed() -> None:
    # Found by tests/fuzz: json's RecursionError escaped the parser.
    with pytest.raises(MalformedEvidence, match="nested too deeply"):
        parse_tdx_evidence(b'{"quote":' * 100_000 + b"1" + b"}" * 100_000)
