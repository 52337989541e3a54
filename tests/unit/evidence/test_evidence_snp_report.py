"""The SEV-SNP report layout against real reports: every field SOURCES.md states, round trips, signatures."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ccpipe.evidence.errors import MalformedEvidence, UnsupportedEvidence
from ccpipe.evidence.snp_report import (
    LAYOUT,
    REPORT_SIZE,
    SIGNING_KEY_VCEK,
    SIGNING_KEY_VLEK,
    TcbVersion,
    parse_snp_report,
    processor_generation,
    serialize_snp_report,
    signed_portion,
)
from tests.unit.evidence.evidence_helpers import read_vector, verify_snp_signature

# AMD issues VCEKs with serial number 0, which cryptography parses with a deprecation warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)

# (folder, report, vcek, expected values from the folder's SOURCES.md)
REAL_REPORTS = {
    "go-sev-guest": (
        "go-sev-guest",
        "attestation.bin",
        "vcek.testcer",
        dict(
            version=2,
            vmpl=0,
            policy=0xB0000,
            debug=True,
            tcb=(2, 0, 5, 68),
            fw=(1, 49, 3),
            product=None,
            measurement="b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
            "6bdf8a9ece31a5a608eb0cf2e4872b01",
            report_data_prefix="0102030405" + "00" * 59,
            chip_id_prefix="3ac3fe21",
            chip_id_suffix="068b006b5d",
        ),
    ),
    "virtee-milan": (
        "virtee-sev",
        "report_milan.hex",
        "vcek_milan.der",
        dict(
            version=2,
            vmpl=0,
            policy=0x30000,
            debug=False,
            tcb=(3, 0, 8, 115),
            fw=(1, 52, 4),
            product=None,
            measurement="7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
            "3e1a0dc39b2c60bd95b9c480cd81841f",
            report_data_prefix="d447b55d",
            chip_id_prefix="d49554ec",
            chip_id_suffix="4d541eb6",
        ),
    ),
    "trustee-milan": (
        "trustee",
        "snp/test-report.bin",
        "snp/test-vcek.der",
        dict(
            version=2,
            vmpl=0,
            policy=0x3001F,
            debug=False,
            tcb=(3, 0, 8, 115),
            fw=None,
            product=None,
            measurement="a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
            "23500644e0e692e6be917f9050d3d38c",
            report_data_prefix="ec6c52d7",
            chip_id_prefix="c38427a3",
            chip_id_suffix="77524e",
        ),
    ),
    "trustee-genoa": (
        "trustee",
        "snp-e2e/e2e-snp-genoa-report.bin",
        "snp-e2e/e2e-snp-genoa-vcek.der",
        dict(
            version=3,
            vmpl=0,
            policy=0x30000,
            debug=False,
            tcb=(10, 0, 23, 25),
            fw=(1, 55, 40),
            product="Genoa",
            measurement="6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4"
            "ae62a36d75c837974dd50b315506e73e",
            report_data_prefix="7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
            "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0",
            chip_id_prefix="371c55d6",
            chip_id_suffix="de8718e8",
        ),
    ),
}


def _load(folder: str, name: str) -> bytes:
    if "/" in name:
        sub, leaf = name.split("/")
        return read_vector(f"{folder}/{sub}", leaf)
    return read_vector(folder, name)


def _vcek(folder: str, name: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(_load(folder, name))


@pytest.mark.parametrize("case", REAL_REPORTS.values(), ids=REAL_REPORTS.keys())
def test_real_report_fields_match_sources(case: tuple[str, str, str, dict[str, object]]) -> None:
    folder, report_name, _, want = case
    report = parse_snp_report(_load(folder, report_name))
    assert report.version == want["version"]
    assert report.vmpl == want["vmpl"]
    assert report.policy == want["policy"]
    assert report.debug_allowed is want["debug"]
    tcb = report.reported_tcb
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == want["tcb"]
    assert tcb.fmc is None
    if want["fw"] is not None:
        assert (report.current_major, report.current_minor, report.current_build) == want["fw"]
    assert report.product == want["product"]
    assert report.measurement.hex() == want["measurement"]
    assert report.report_data.hex().startswith(str(want["report_data_prefix"]))
    assert report.chip_id.hex().startswith(str(want["chip_id_prefix"]))
    assert report.chip_id.hex().endswith(str(want["chip_id_suffix"]))
    assert report.signing_key == SIGNING_KEY_VCEK
    assert report.signature_algo == 1


def test_trustee_milan_report_has_zero_host_data_and_half_report_data() -> None:
    report = parse_snp_report(read_vector("trustee/snp", "test-report.bin"))
    assert report.host_data == bytes(32)
    assert report.report_data[32:] == bytes(32)
    assert report.cpuid_fam_id is None  # version 2 has no CPUID fields


def test_vlek_report_fields() -> None:
    report = parse_snp_report(read_vector("trustee/snp", "test-vlek-report.bin"))
    assert (report.version, report.vmpl, report.policy) == (3, 1, 0x30000)
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.product) == (0x19, 0x01, "Milan")
    assert report.signing_key == SIGNING_KEY_VLEK
    assert report.chip_id == bytes(64)
    assert report.platform_info & 0x2  # TSME on
    assert report.measurement.hex().startswith("8922ebbdd00ec2c541f36a6e7a82a8773a7accb4")
    t = report.reported_tcb
    assert (t.bootloader, t.tee, t.snp, t.microcode) == (4, 0, 24, 217)


@pytest.mark.parametrize("case", REAL_REPORTS.values(), ids=REAL_REPORTS.keys())
def test_real_report_round_trips_byte_for_byte(case: tuple[str, str, str, dict[str, object]]) -> None:
    raw = _load(case[0], case[1])
    report = parse_snp_report(raw)
    assert serialize_snp_report(report) == raw
    assert report.signed_portion() == signed_portion(raw) == raw[:0x2A0]


@pytest.mark.parametrize("case", REAL_REPORTS.values(), ids=REAL_REPORTS.keys())
def test_real_signature_verifies_over_signed_portion(case: tuple[str, str, str, dict[str, object]]) -> None:
    folder, report_name, vcek_name, _ = case
    raw = _load(folder, report_name)
    report = parse_snp_report(raw)
    vcek = _vcek(folder, vcek_name)
    verify_snp_signature(report.serialize(), vcek)
    r, s = report.signature_rs
    assert r == int.from_bytes(raw[0x2A0:0x2E8], "little") and s == int.from_bytes(raw[0x2E8:0x330], "little")


def test_flipped_byte_breaks_the_signature() -> None:
    raw = bytearray(read_vector("trustee/snp", "test-report.bin"))
    raw[42] ^= 0x01
    with pytest.raises(InvalidSignature):
        verify_snp_signature(bytes(raw), x509.load_der_x509_certificate(read_vector("trustee/snp", "test-vcek.der")))


def test_with_signature_places_little_endian_components() -> None:
    report = parse_snp_report(read_vector("trustee/snp", "test-report.bin")).with_signature(0x0102, 0x0304)
    raw = report.serialize()
    assert raw[0x2A0:0x2A2] == b"\x02\x01" and raw[0x2E8:0x2EA] == b"\x04\x03"
    assert raw[0x2A2:0x2E8] == bytes(70)


def test_layout_offsets_are_the_abi_ones() -> None:
    offsets = {f.name: f.offset for f in LAYOUT}
    assert offsets["report_data"] == 0x50
    assert offsets["measurement"] == 0x90
    assert offsets["host_data"] == 0xC0
    assert offsets["reported_tcb"] == 0x180
    assert offsets["chip_id"] == 0x1A0
    assert offsets["signature_r"] == 0x2A0
    ends = sorted((f.offset, f.offset + f.size) for f in LAYOUT)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ends))
    assert ends[-1][1] <= REPORT_SIZE


def test_turin_tcb_layout_puts_fmc_first() -> None:
    tcb = TcbVersion.from_parts(fmc=1, bootloader=2, tee=3, snp=4, microcode=5)
    assert tcb.raw.to_bytes(8, "little") == bytes([1, 2, 3, 4, 0, 0, 0, 5])
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (1, 2, 3, 4, 5)
    legacy = TcbVersion.from_parts(bootloader=2, tee=3, snp=4, microcode=5)
    assert legacy.raw.to_bytes(8, "little") == bytes([2, 3, 0, 0, 0, 0, 4, 5])


def test_turin_report_decodes_tcb_with_fmc() -> None:
    raw = bytearray(read_vector("trustee/snp-e2e", "e2e-snp-genoa-report.bin"))
    raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x01])  # a Turin CPUID
    raw[0x180:0x188] = bytes([7, 2, 3, 4, 0, 0, 0, 9])
    report = parse_snp_report(bytes(raw))
    assert report.product == "Turin"
    assert (report.reported_tcb.fmc, report.reported_tcb.bootloader, report.reported_tcb.microcode) == (7, 2, 9)
    assert report.serialize() == bytes(raw)


def test_v5_mitigation_vectors_are_read_and_absent_before() -> None:
    raw = bytearray(read_vector("trustee/snp-e2e", "e2e-snp-genoa-report.bin"))
    assert parse_snp_report(bytes(raw)).launch_mit_vector is None
    raw[0:4] = (5).to_bytes(4, "little")
    raw[0x1F8:0x200] = (0x55).to_bytes(8, "little")
    raw[0x200:0x208] = (0x66).to_bytes(8, "little")
    report = parse_snp_report(bytes(raw))
    assert (report.launch_mit_vector, report.current_mit_vector) == (0x55, 0x66)
    assert report.serialize() == bytes(raw)


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [(0x19, 0x01, "Milan"), (0x19, 0x11, "Genoa"), (0x19, 0xA0, "Genoa"), (0x1A, 0x02, "Turin"), (0x19, 0x40, None)],
)
def test_processor_generation(family: int, model: int, product: str | None) -> None:
    assert processor_generation(family, model) == product


@pytest.mark.parametrize("size", [0, 1183, 1185, 4000])
def test_wrong_size_is_malformed(size: int) -> None:
    with pytest.raises(MalformedEvidence, match="1184 bytes"):
        parse_snp_report(bytes(size))
    with pytest.raises(MalformedEvidence):
        signed_portion(bytes(size))


@pytest.mark.parametrize("version", [0, 1])
def test_old_versions_are_unsupported(version: int) -> None:
    raw = bytearray(REPORT_SIZE)
    raw[0] = version
    with pytest.raises(UnsupportedEvidence, match=f"version {version}"):
        parse_snp_report(bytes(raw))


def test_constructor_refuses_wrong_field_sizes() -> None:
    report = parse_snp_report(read_vector("trustee/snp", "test-report.bin"))
    with pytest.raises(MalformedEvidence, match="report_data must be 64 bytes"):
        dataclasses.replace(report, report_data=b"short")
    with pytest.raises(MalformedEvidence, match="vmpl"):
        dataclasses.replace(report, vmpl=1 << 32)
