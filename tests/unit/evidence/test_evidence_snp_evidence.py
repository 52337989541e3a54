"""Trustee's SEV-SNP evidence JSON and the kernel certificate table, against Trustee's real evidence."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.snp_evidence import (
    CERT_GUIDS,
    CertTableEntry,
    SnpEvidence,
    parse_cert_table,
    parse_snp_evidence,
    serialize_cert_table,
    snp_report_from_json,
    snp_report_to_json,
)
from ccpipe.evidence.snp_report import parse_snp_report
from tests.unit.evidence.evidence_helpers import read_vector


@pytest.fixture
def trustee_evidence() -> dict[str, Any]:
    value = json.loads(read_vector("trustee/snp-e2e", "evidence.json"))
    assert isinstance(value, dict)
    return value


def test_trustee_json_rebuilds_the_raw_report_exactly(trustee_evidence: dict[str, Any]) -> None:
    report = snp_report_from_json(trustee_evidence["attestation_report"])
    assert report.serialize() == read_vector("trustee/snp-e2e", "e2e-snp-genoa-report.bin")


def test_raw_report_renders_as_trustee_json(trustee_evidence: dict[str, Any]) -> None:
    report = parse_snp_report(read_vector("trustee/snp-e2e", "e2e-snp-genoa-report.bin"))
    rendered = snp_report_to_json(report)
    assert rendered == trustee_evidence["attestation_report"]
    assert list(rendered) == list(trustee_evidence["attestation_report"])  # the sev crate's field order


def test_parse_evidence_keeps_the_vcek(trustee_evidence: dict[str, Any]) -> None:
    evidence = parse_snp_evidence(json.dumps(trustee_evidence).encode())
    assert evidence.certificate("VCEK") == read_vector("trustee/snp-e2e", "e2e-snp-genoa-vcek.der")
    assert evidence.certificate("ARK") is None
    assert json.loads(evidence.to_bytes()) == trustee_evidence


def test_v2_report_json_has_null_cpuid_and_no_mitigation_vectors() -> None:
    doc = snp_report_to_json(parse_snp_report(read_vector("trustee/snp", "test-report.bin")))
    assert doc["cpuid_fam_id"] is None and "launch_mit_vector" not in doc
    assert snp_report_from_json(doc).serialize() == read_vector("trustee/snp", "test-report.bin")


def test_null_cert_chain_round_trips() -> None:
    report = parse_snp_report(read_vector("trustee/snp", "test-report.bin"))
    evidence = parse_snp_evidence(SnpEvidence(report, None).to_bytes())
    assert evidence.cert_chain is None and evidence.report == report


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("attestation_report"), "attestation_report"),
        (lambda d: d["attestation_report"].pop("measurement"), "measurement"),
        (lambda d: d["attestation_report"].__setitem__("report_data", [0] * 63), "report_data must be a list of 64"),
        (lambda d: d["attestation_report"].__setitem__("vmpl", "0"), "vmpl must be an integer"),
        (lambda d: d["attestation_report"].__setitem__("chip_id", [256] * 64), "chip_id"),
        (lambda d: d["attestation_report"]["signature"].pop("s"), "'s'"),
        (lambda d: d["attestation_report"]["reported_tcb"].pop("snp"), "snp"),
        (lambda d: d.__setitem__("cert_chain", [{"cert_type": 5, "data": []}]), "cert_type"),
    ],
    ids=[
        "no-report",
        "no-measurement",
        "short-report-data",
        "string-vmpl",
        "byte-out-of-range",
        "no-sig-s",
        "no-tcb-snp",
        "bad-cert-type",
    ],
)
def test_malformed_evidence_is_refused(trustee_evidence: dict[str, Any], mutate: Any, message: str) -> None:
    mutate(trustee_evidence)
    with pytest.raises(MalformedEvidence, match=message):
        parse_snp_evidence(json.dumps(trustee_evidence))


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"attestation_report": 1}', b"\xff\xfe"])
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        parse_snp_evidence(data)


def test_cert_table_round_trip_and_guids() -> None:
    entries = (CertTableEntry("VCEK", b"v" * 10), CertTableEntry("ASK", b"a" * 3), CertTableEntry("ARK", b""))
    table = serialize_cert_table(entries)
    assert table[:16] == uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes  # RFC 4122 byte order
    assert table[72:96] == bytes(24)  # the terminator after three entries
    assert parse_cert_table(table) == entries


def test_cert_table_keeps_unknown_guids_and_renders_them_as_other() -> None:
    other = str(uuid.UUID(int=12345))
    table = serialize_cert_table([CertTableEntry(other, b"x")])
    (entry,) = parse_cert_table(table)
    assert entry.cert_type == other
    report = parse_snp_report(read_vector("trustee/snp", "test-report.bin"))
    doc = json.loads(SnpEvidence(report, (entry,)).to_bytes())
    assert doc["cert_chain"][0]["cert_type"] == {"OTHER": other}
    assert parse_snp_evidence(doc).cert_chain == (entry,)


def test_cert_table_without_terminator_or_with_bad_offsets_is_refused() -> None:
    unterminated = CERT_GUIDS["VCEK"].bytes + (24).to_bytes(4, "little") + bytes(4)
    with pytest.raises(MalformedEvidence, match="terminating"):
        parse_cert_table(unterminated)
    table = bytearray(serialize_cert_table([CertTableEntry("VCEK", b"abc")]))
    table[16:20] = (4096).to_bytes(4, "little")
    with pytest.raises(MalformedEvidence, match="outside"):
        parse_cert_table(bytes(table))


def test_cert_guids_are_the_amd_ones() -> None:
    assert str(CERT_GUIDS["ARK"]) == "c0b406a4-a803-4952-9743-3fb6014cd0ae"
    assert str(CERT_GUIDS["VLEK"]) == "a8074bc2-a25a-483e-aae6-39c045a0b8a1"


def test_evidence_json_nested_beyond_the_recursion_limit_is_malformed() -> None:
    # Found by tests/fuzz: json's RecursionError escaped the parser.
    with pytest.raises(MalformedEvidence, match="nested too deeply"):
        parse_snp_evidence(b"[" * 100_000 + b"]" * 100_000)
