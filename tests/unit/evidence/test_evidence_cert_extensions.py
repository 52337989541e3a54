"""AMD VCEK and Intel PCK certificate extensions: read from real certificates, re-encoded byte-exactly."""

from __future__ import annotations

import pytest
from cryptography import x509

from ccpipe.evidence.cert_extensions import (
    SGX_EXTENSION,
    PckExtensions,
    parse_pck_extension,
    pck_extensions,
    vcek_extensions,
)
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.snp_report import TcbVersion
from ccpipe.evidence.tdx_quote import parse_tdx_quote
from tests.unit.evidence.evidence_helpers import read_vector

# AMD issues VCEKs with serial number 0, which cryptography parses with a deprecation warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)


def _der(folder: str, name: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(read_vector(folder, name))


def _pck(folder: str, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(parse_tdx_quote(read_vector(folder, name)).pck_chain_pem)[0]


@pytest.mark.parametrize(
    ("folder", "name", "product", "spl", "hw_len"),
    [
        ("virtee-sev", "vcek_milan.der", "Milan-B0", (3, 0, 8, 115, None), 64),
        ("virtee-sev", "vcek_turin.der", "Turin", (0, 0, 0, 9, 0), 8),
        ("trustee/snp", "test-vcek.der", "Milan-B0", (3, 0, 8, 115, None), 64),
        ("trustee/snp", "test-vlek.der", "Milan", (4, 0, 24, 217, None), None),
        ("trustee/snp", "test-vcek-invalid-new.der", "Milan-B0", (0, 0, 0, 30, None), 64),
    ],
)
def test_vcek_extensions_of_real_certificates(
    folder: str, name: str, product: str, spl: tuple[int, ...], hw_len: int | None
) -> None:
    ext = vcek_extensions(_der(folder, name))
    assert ext.product_name == product
    assert (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl, ext.fmc_spl) == spl
    assert (None if ext.hw_id is None else len(ext.hw_id)) == hw_len


def test_hw_id_of_new_der_encoding_and_legacy_raw_encoding() -> None:
    legacy = vcek_extensions(_der("trustee/snp", "test-vcek-invalid-legacy.der")).hw_id
    new = vcek_extensions(_der("trustee/snp", "test-vcek-invalid-new.der")).hw_id
    assert legacy == bytes(range(64))  # SOURCES.md: hwID 00 01 02 … 3f as raw bytes
    assert new is not None and len(new) == 64


def test_vcek_matches_its_report_tcb_and_not_another() -> None:
    ext = vcek_extensions(_der("trustee/snp", "test-vcek.der"))
    assert ext.matches(TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115))
    assert not ext.matches(TcbVersion.from_parts(bootloader=4, tee=0, snp=8, microcode=115))


def test_vcek_extensions_re_encode_as_amd_does() -> None:
    cert = _der("virtee-sev", "vcek_milan.der")
    original = {e.oid.dotted_string: e.value.value for e in cert.extensions}
    for ext in vcek_extensions(cert).extensions():
        assert original[ext.oid.dotted_string] == ext.value.value


def test_certificate_without_amd_extensions_is_malformed() -> None:
    with pytest.raises(MalformedEvidence, match="missing extension"):
        vcek_extensions(_pck("trustee/tdx", "tdx_quote_4.dat"))


@pytest.mark.parametrize(
    ("folder", "name", "fmspc", "pce_svn", "comps", "config"),
    [
        (
            "go-tdx-guest",
            "tdx_prod_quote_SPR_E4.dat",
            "50806f000000",
            11,
            (3, 3, 2, 2, 2, 1, 0, 2),
            (True, False, True),
        ),
        ("go-tdx-guest", "quote_v5_sample.dat", "90c06f000000", 13, (4, 4, 2, 2, 4, 1, 0, 5), (True, True, True)),
        ("trustee/tdx", "tdx_quote_4.dat", "50806f000000", 11, (5, 5, 13, 2, 3, 1, 0, 3), (True, True, True)),
    ],
)
def test_pck_extension_of_real_quotes(
    folder: str, name: str, fmspc: str, pce_svn: int, comps: tuple[int, ...], config: tuple[bool, ...]
) -> None:
    cert = _pck(folder, name)
    ext = pck_extensions(cert)
    assert ext.fmspc.hex() == fmspc
    assert ext.pce_svn == pce_svn
    assert ext.sgx_tcb_components[:8] == comps
    assert ext.cpu_svn[:8] == bytes(comps)
    assert ext.pce_id == b"\x00\x00"
    assert ext.configuration == config
    raw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION)).value.value  # type: ignore[attr-defined]
    assert ext.encode() == raw  # byte-exact re-encoding


def test_pck_extension_round_trip_without_platform_fields() -> None:
    ext = PckExtensions(b"p" * 16, tuple(range(16)), 300, b"c" * 16, b"\x00\x01", b"f" * 6, 0)
    assert parse_pck_extension(ext.encode()) == ext


@pytest.mark.parametrize("value", [b"", b"\x30\x03\x02\x01\x05", b"\x04\x00", b"\x30\x82\xff"])
def test_malformed_pck_extension(value: bytes) -> None:
    with pytest.raises(MalformedEvidence, match="SGX PCK"):
        parse_pck_extension(value)


def test_certificate_without_pck_extension() -> None:
    with pytest.raises(MalformedEvidence, match="no SGX PCK extension"):
        pck_extensions(_der("virtee-sev", "vcek_milan.der"))
