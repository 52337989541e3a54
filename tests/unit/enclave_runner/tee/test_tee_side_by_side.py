"""Real vectors and emulated evidence side by side: every field a verifier reads sits at the same offset.

The offsets below are typed in from the vendor specifications (AMD SEV-SNP ABI "ATTESTATION_REPORT",
Intel DCAP "Quote Format" v4), independently of the layout tables under test, and both a real
report/quote and an emulated one are read at them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.emulated_tdx import EmulatedTdxBackend
from ccpipe.evidence.snp_evidence import parse_snp_evidence, snp_report_to_json
from ccpipe.evidence.snp_report import parse_snp_report
from ccpipe.evidence.tdx_quote import parse_tdx_evidence, parse_tdx_quote
from tests.unit.evidence.evidence_helpers import read_vector

# name: (offset, size, "int" little-endian | "bytes")
SNP_SPEC = {
    "version": (0x000, 4, "int"),
    "guest_svn": (0x004, 4, "int"),
    "policy": (0x008, 8, "int"),
    "vmpl": (0x030, 4, "int"),
    "signature_algo": (0x034, 4, "int"),
    "platform_info": (0x040, 8, "int"),
    "key_info": (0x048, 4, "int"),
    "report_data": (0x050, 64, "bytes"),
    "measurement": (0x090, 48, "bytes"),
    "host_data": (0x0C0, 32, "bytes"),
    "id_key_digest": (0x0E0, 48, "bytes"),
    "report_id": (0x140, 32, "bytes"),
    "cpuid_fam_id": (0x188, 1, "int"),
    "cpuid_mod_id": (0x189, 1, "int"),
    "chip_id": (0x1A0, 64, "bytes"),
    "current_major": (0x1EA, 1, "int"),
    "signature_r": (0x2A0, 72, "bytes"),
    "signature_s": (0x2E8, 72, "bytes"),
}
SNP_TCB_SPEC = {"reported_tcb": 0x180, "current_tcb": 0x038, "committed_tcb": 0x1E0, "launch_tcb": 0x1F0}

# v4 quote, absolute offsets: header 0..48, TD report body 48..632, then the signature data.
TDX_SPEC = {
    "header.version": (0, 2, "int"),
    "header.att_key_type": (2, 2, "int"),
    "header.tee_type": (4, 4, "int"),
    "header.qe_vendor_id": (12, 16, "bytes"),
    "body.tee_tcb_svn": (48, 16, "bytes"),
    "body.mr_seam": (64, 48, "bytes"),
    "body.td_attributes": (168, 8, "bytes"),
    "body.xfam": (176, 8, "bytes"),
    "body.mr_td": (184, 48, "bytes"),
    "body.mr_config_id": (232, 48, "bytes"),
    "body.rtmr0": (376, 48, "bytes"),
    "body.rtmr1": (424, 48, "bytes"),
    "body.rtmr2": (472, 48, "bytes"),
    "body.rtmr3": (520, 48, "bytes"),
    "body.report_data": (568, 64, "bytes"),
    "signature": (636, 64, "bytes"),
    "attestation_key": (700, 64, "bytes"),
    "qe_report.mr_signer": (770 + 128, 32, "bytes"),
    "qe_report.isv_prod_id": (770 + 256, 2, "int"),
    "qe_report.isv_svn": (770 + 258, 2, "int"),
    "qe_report.report_data": (770 + 320, 64, "bytes"),
    "qe_report_signature": (1154, 64, "bytes"),
}


def _at(raw: bytes, offset: int, size: int, kind: str) -> Any:
    chunk = raw[offset : offset + size]
    return int.from_bytes(chunk, "little") if kind == "int" else chunk


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.fixture
def snp_pair(snp_backend: EmulatedSnpBackend) -> list[bytes]:
    real = read_vector("trustee/snp-e2e", "e2e-snp-genoa-report.bin")
    return [real, snp_backend.report(b"\x5a" * 48).serialize()]


@pytest.mark.parametrize("field", SNP_SPEC)
def test_snp_field_at_spec_offset_in_real_and_emulated(snp_pair: list[bytes], field: str) -> None:
    offset, size, kind = SNP_SPEC[field]
    for raw in snp_pair:
        assert getattr(parse_snp_report(raw), field) == _at(raw, offset, size, kind)


@pytest.mark.parametrize("field", SNP_TCB_SPEC)
def test_snp_tcb_at_spec_offset_in_real_and_emulated(snp_pair: list[bytes], field: str) -> None:
    for raw in snp_pair:
        tcb = getattr(parse_snp_report(raw), field)
        b = raw[SNP_TCB_SPEC[field] : SNP_TCB_SPEC[field] + 8]
        assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (b[0], b[1], b[6], b[7])  # Genoa layout


def test_snp_signature_covers_the_same_range(snp_pair: list[bytes]) -> None:
    for raw in snp_pair:
        assert parse_snp_report(raw).signed_portion() == raw[:0x2A0]
        assert len(raw) == 0x4A0 and raw[0x330:] == bytes(0x4A0 - 0x330)


def test_snp_evidence_json_has_the_real_shape(snp_backend: EmulatedSnpBackend) -> None:
    real = json.loads(read_vector("trustee/snp-e2e", "evidence.json"))
    emulated = json.loads(snp_backend.get_evidence(b"").evidence)
    assert list(emulated["attestation_report"]) == list(real["attestation_report"])
    assert set(emulated["cert_chain"][0]) == set(real["cert_chain"][0])
    for name, value in real["attestation_report"].items():
        assert type(emulated["attestation_report"][name]) is type(value), name
    parsed = parse_snp_evidence(json.dumps(emulated))
    assert snp_report_to_json(parsed.report) == emulated["attestation_report"]


@pytest.fixture
def tdx_pair(tdx_backend: EmulatedTdxBackend) -> list[bytes]:
    real = read_vector("trustee/tdx", "tdx_quote_4.dat")
    emulated = parse_tdx_evidence(tdx_backend.get_evidence(b"\x5a" * 48).evidence).quote
    return [real, emulated]


@pytest.mark.parametrize("field", TDX_SPEC)
def test_tdx_field_at_spec_offset_in_real_and_emulated(tdx_pair: list[bytes], field: str) -> None:
    offset, size, kind = TDX_SPEC[field]
    for raw in tdx_pair:
        assert _attr(parse_tdx_quote(raw), field) == _at(raw, offset, size, kind)


def test_tdx_certification_data_framing_is_the_same(tdx_pair: list[bytes]) -> None:
    for raw in tdx_pair:
        quote = parse_tdx_quote(raw)
        assert int.from_bytes(raw[632:636], "little") == len(raw) - 636 - len(quote.trailing)
        assert int.from_bytes(raw[764:766], "little") == 6  # QE report certification data
        auth = int.from_bytes(raw[1218:1220], "little")
        assert raw[1220 : 1220 + auth] == quote.qe_auth_data
        assert int.from_bytes(raw[1220 + auth : 1222 + auth], "little") == 5  # PEM PCK chain
        assert raw[1226 + auth :].startswith(b"-----BEGIN CERTIFICATE-----")
