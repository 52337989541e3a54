"""SEV-SNP verifier against the real vectors (trustee, go-sev-guest, virtee-sev) and against
reports signed by a throw-away PKI for the policy bits the vectors do not show."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from ccpipe.stages.attest.errors import (
    AttestationError,
    CertificateChainInvalid,
    CertificateExpired,
    DebugNotAllowed,
    EmulatedNotAllowed,
    EndorsementMissing,
    EvidenceMalformed,
    EvidenceSignatureInvalid,
    EvidenceUnsupported,
    InitDataMismatch,
    MeasurementMismatch,
    MigrationAgentNotAllowed,
    ReportDataMismatch,
    TcbMismatch,
    TcbTooLow,
    VmplNotAllowed,
)
from ccpipe.stages.attest.verifiers import Binding, SnpPolicy, SnpTcb, VerifierConfig
from ccpipe.stages.attest.verifiers._x509 import load_der
from ccpipe.stages.attest.verifiers.interface import JsonEvidence
from ccpipe.stages.attest.verifiers.snp import SnpVerifier, snp_evidence
from ccpipe.stages.attest.verifiers.snp import parse_report as parse_snp_report
from ccpipe.stages.attest.verifiers.snp_certs import builtin_roots, vcek_store_path, verify_vek_chain
from tests.unit.stages.attest.verifiers.verifier_helpers import at, flip, make_snp_pki, read, snp_report

E2E_REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)
E2E_MEASUREMENT = bytes.fromhex(
    "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e"
)


def verifier(year: int = 2026, **policy: Any) -> SnpVerifier:
    return SnpVerifier(VerifierConfig(now=at(year, 6), snp=SnpPolicy(**policy)))


def evidence_for(report_file: tuple[str, str], cert_file: tuple[str, str], kind: str = "VCEK") -> tuple[bytes, bytes]:
    raw = read(*report_file)
    return raw, snp_evidence(raw, {kind: read(*cert_file)})


def binding_of(raw: bytes) -> Binding:
    return Binding(report_data=parse_snp_report(raw).report_data)


# --- trustee snp-e2e: real Genoa v3 report in Trustee's JSON form -----------------------------


def test_trustee_e2e_genoa_evidence_json_verifies() -> None:
    claims = verifier().verify(read("trustee", "snp-e2e/evidence.json"), Binding(report_data=E2E_REPORT_DATA))
    assert claims.product == "Genoa"
    assert claims.emulated is False
    assert claims.measurement == E2E_MEASUREMENT.hex()
    assert claims.tcb == {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}
    assert claims.fields["policy_debug_allowed"] is False
    assert claims.fields["firmware"] == "1.55.40"


def test_trustee_e2e_raw_rebuild_equals_json_and_verifies() -> None:
    raw = read("trustee", "snp-e2e/e2e-snp-genoa-report.bin")
    ev = snp_evidence(raw, {"VCEK": read("trustee", "snp-e2e/e2e-snp-genoa-vcek.der")})
    assert verifier().verify(ev, Binding(report_data=E2E_REPORT_DATA)).product == "Genoa"


def test_wrong_report_data_is_rejected() -> None:
    with pytest.raises(ReportDataMismatch, match="report_data"):
        verifier().verify(read("trustee", "snp-e2e/evidence.json"), Binding(report_data=b"\x01" * 48))


def test_expected_measurement_accepts_and_rejects() -> None:
    ev = read("trustee", "snp-e2e/evidence.json")
    verifier().verify(ev, Binding(report_data=E2E_REPORT_DATA, measurement=E2E_MEASUREMENT))
    with pytest.raises(MeasurementMismatch):
        verifier().verify(ev, Binding(report_data=E2E_REPORT_DATA, measurement=bytes(48)))


def test_vcek_outside_validity_is_rejected() -> None:
    # The Genoa VCEK is valid from 2025-05-27.
    with pytest.raises(CertificateExpired, match="VCEK"):
        verifier(2024).verify(read("trustee", "snp-e2e/evidence.json"), Binding(report_data=E2E_REPORT_DATA))


def test_json_signature_tampering_is_rejected() -> None:
    obj = json.loads(read("trustee", "snp-e2e/evidence.json"))
    obj["attestation_report"]["measurement"][0] ^= 1
    with pytest.raises(EvidenceSignatureInvalid):
        verifier().verify(json.dumps(obj).encode(), Binding(report_data=E2E_REPORT_DATA))


def test_evidence_handed_over_decoded_gives_the_same_verdicts() -> None:
    # What the KBS passes: the JSON it already decoded out of the /attest body, with its bytes.
    obj = json.loads(read("trustee", "snp-e2e/evidence.json"))
    handed = JsonEvidence.encode(obj)
    assert bytes(handed) == json.dumps(obj, separators=(",", ":")).encode() and handed.decoded is obj
    assert verifier().verify(handed, Binding(report_data=E2E_REPORT_DATA)) == verifier().verify(
        read("trustee", "snp-e2e/evidence.json"), Binding(report_data=E2E_REPORT_DATA))
    obj["attestation_report"]["measurement"][0] ^= 1
    with pytest.raises(EvidenceSignatureInvalid):
        verifier().verify(JsonEvidence.encode(obj), Binding(report_data=E2E_REPORT_DATA))
    with pytest.raises(EvidenceMalformed, match="attestation_report"):
        verifier().verify(JsonEvidence.encode({"report": obj["attestation_report"]}),
                          Binding(report_data=E2E_REPORT_DATA))


# --- trustee snp/: Milan v2 VCEK report and v3 VLEK report ---------------------------------


def test_trustee_v2_milan_report_verifies_when_v2_is_accepted() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-report.bin"), ("trustee", "snp/test-vcek.der"))
    claims = verifier().verify(ev, binding_of(raw))
    assert (claims.product, claims.fields["version"]) == ("Milan", 2)
    assert claims.tcb == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def test_trustee_v2_report_rejected_when_policy_requires_v3() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-report.bin"), ("trustee", "snp/test-vcek.der"))
    with pytest.raises(EvidenceUnsupported, match="version 2"):
        verifier(min_report_version=3).verify(ev, binding_of(raw))


def test_flipped_byte_42_breaks_the_signature() -> None:
    raw = read("trustee", "snp/test-report.bin")
    bad = flip(raw, 42)
    with pytest.raises(EvidenceSignatureInvalid):
        verifier().verify(snp_evidence(bad, {"VCEK": read("trustee", "snp/test-vcek.der")}), binding_of(raw))


def test_flipped_reported_tcb_does_not_match_the_vcek() -> None:
    raw = read("trustee", "snp/test-report.bin")
    bad = flip(raw, 384)
    with pytest.raises(TcbMismatch, match="bootloader"):
        verifier().verify(snp_evidence(bad, {"VCEK": read("trustee", "snp/test-vcek.der")}), binding_of(raw))


def test_vlek_report_from_vmpl1_is_rejected() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-vlek-report.bin"), ("trustee", "snp/test-vlek.der"), "VLEK")
    with pytest.raises(VmplNotAllowed, match="VMPL 1"):
        verifier(2025).verify(ev, binding_of(raw))


def test_vlek_report_accepted_when_policy_allows_vmpl1() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-vlek-report.bin"), ("trustee", "snp/test-vlek.der"), "VLEK")
    claims = verifier(2025, max_vmpl=1).verify(ev, binding_of(raw))
    assert claims.fields["signing_key"] == "VLEK"
    assert claims.fields["platform_tsme_enabled"] is True


def test_vlek_expired_after_2025_12_10() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-vlek-report.bin"), ("trustee", "snp/test-vlek.der"), "VLEK")
    with pytest.raises(CertificateExpired):
        verifier(2026, max_vmpl=1).verify(ev, binding_of(raw))


def test_vcek_sent_as_vlek_does_not_chain_to_the_asvk() -> None:
    raw = read("trustee", "snp/test-vlek-report.bin")
    ev = snp_evidence(raw, {"VLEK": read("trustee", "snp/test-vcek.der")})
    with pytest.raises(CertificateChainInvalid):
        verifier(2025, max_vmpl=1).verify(ev, binding_of(raw))


@pytest.mark.parametrize("name", ["snp/test-vcek-invalid-legacy.der", "snp/test-vcek-invalid-new.der"])
def test_invalid_vceks_parse_but_do_not_chain(name: str) -> None:
    raw = read("trustee", "snp/test-report.bin")
    with pytest.raises(CertificateChainInvalid):
        verifier().verify(snp_evidence(raw, {"VCEK": read("trustee", name)}), binding_of(raw))


def test_milan_vcek_does_not_chain_to_the_genoa_ark() -> None:
    vcek = load_der(read("trustee", "snp/test-vcek.der"), "VCEK")
    verify_vek_chain(vcek, "VCEK", builtin_roots("Milan"), provided_ark=None, provided_ask=None, at=at(2026))
    with pytest.raises(CertificateChainInvalid):
        verify_vek_chain(vcek, "VCEK", builtin_roots("Genoa"), provided_ark=None, provided_ask=None, at=at(2026))


def test_genoa_ark_sent_with_milan_evidence_is_rejected() -> None:
    raw = read("trustee", "snp/test-report.bin")
    genoa = builtin_roots("Genoa")
    from cryptography.hazmat.primitives.serialization import Encoding

    ev = snp_evidence(raw, {"VCEK": read("trustee", "snp/test-vcek.der"), "ARK": genoa.ark.public_bytes(Encoding.DER)})
    with pytest.raises(CertificateChainInvalid, match="ARK"):
        verifier().verify(ev, binding_of(raw))


def test_genoa_ask_sent_with_milan_evidence_is_rejected() -> None:
    raw = read("trustee", "snp/test-report.bin")
    from cryptography.hazmat.primitives.serialization import Encoding

    ask = builtin_roots("Genoa").ask.public_bytes(Encoding.DER)
    ev = snp_evidence(raw, {"VCEK": read("trustee", "snp/test-vcek.der"), "ASK": ask})
    with pytest.raises(CertificateChainInvalid):
        verifier().verify(ev, binding_of(raw))


def test_product_not_in_policy_is_refused() -> None:
    raw, ev = evidence_for(("trustee", "snp/test-report.bin"), ("trustee", "snp/test-vcek.der"))
    with pytest.raises(EvidenceUnsupported, match="Milan"):
        verifier(products=("Genoa",)).verify(ev, binding_of(raw))


@pytest.mark.parametrize(("minimum", "ok"), [((3, 0, 8, 115), True), ((3, 0, 9, 115), False), ((4, 0, 8, 115), False)])
def test_minimum_tcb(minimum: tuple[int, int, int, int], ok: bool) -> None:
    raw, ev = evidence_for(("trustee", "snp/test-report.bin"), ("trustee", "snp/test-vcek.der"))
    bl, tee, snp, ucode = minimum
    v = verifier(min_tcb=SnpTcb(bootloader=bl, tee=tee, snp=snp, microcode=ucode))
    if ok:
        v.verify(ev, binding_of(raw))
    else:
        with pytest.raises(TcbTooLow):
            v.verify(ev, binding_of(raw))


# --- go-sev-guest: Milan v2 report with the debug policy bit --------------------------------


def test_go_sev_guest_debug_report_rejected_by_default() -> None:
    raw, ev = evidence_for(("go-sev-guest", "attestation.bin"), ("go-sev-guest", "vcek.testcer"))
    with pytest.raises(DebugNotAllowed, match="bit 19"):
        verifier().verify(ev, binding_of(raw))


def test_go_sev_guest_debug_report_accepted_when_debug_allowed() -> None:
    _, ev = evidence_for(("go-sev-guest", "attestation.bin"), ("go-sev-guest", "vcek.testcer"))
    claims = verifier(allow_debug=True).verify(ev, Binding(report_data=bytes([1, 2, 3, 4, 5])))
    assert claims.debug is True
    assert claims.tcb == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}


def test_go_sev_guest_chain_files_are_the_shipped_anchors() -> None:
    from ccpipe.stages.attest.verifiers._x509 import load_pem_chain

    ask, ark = load_pem_chain(read("go-sev-guest", "milan.testcer"), "milan")
    assert ark == builtin_roots("Milan").ark and ask == builtin_roots("Milan").ask
    for product, name in (("Genoa", "ask_ark_genoa.pem"), ("Turin", "ask_ark_turin_vcek.pem")):
        ask, ark = load_pem_chain(read("go-sev-guest", f"trust/{name}"), name)
        assert ark == builtin_roots(product).ark


# --- virtee-sev: Milan v2 report as hex text ---------------------------------------------


def test_virtee_milan_report_verifies() -> None:
    raw = bytes.fromhex(read("virtee-sev", "report_milan.hex").decode().strip())
    claims = verifier().verify(snp_evidence(raw, {"VCEK": read("virtee-sev", "vcek_milan.der")}), binding_of(raw))
    assert claims.measurement.startswith("7a1e5c26")


def test_virtee_turin_vcek_chains_to_turin_only() -> None:
    vcek = load_der(read("virtee-sev", "vcek_turin.der"), "VCEK")
    verify_vek_chain(vcek, "VCEK", builtin_roots("Turin"), provided_ark=None, provided_ask=None, at=at(2026))
    with pytest.raises(CertificateChainInvalid):
        verify_vek_chain(vcek, "VCEK", builtin_roots("Milan"), provided_ark=None, provided_ask=None, at=at(2026))


# --- the offline VCEK store ---------------------------------------------------------------


def test_raw_report_uses_the_offline_vcek_store(tmp_path: Path) -> None:
    raw = read("virtee-sev", "report_milan.hex")
    raw = bytes.fromhex(raw.decode().strip())
    report = parse_snp_report(raw)
    tcb = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    path = vcek_store_path(tmp_path, report.chip_id, "Milan", tcb)
    path.parent.mkdir(parents=True)
    path.write_bytes(read("virtee-sev", "vcek_milan.der"))
    assert verifier(vcek_store=tmp_path).verify(raw, binding_of(raw)).product == "Milan"


def test_raw_report_without_vcek_is_rejected(tmp_path: Path) -> None:
    raw = read("trustee", "snp/test-report.bin")
    with pytest.raises(EndorsementMissing, match="VCEK"):
        verifier(vcek_store=tmp_path).verify(raw, binding_of(raw))


# --- policy bits the vectors do not show: reports signed by a test PKI ---------------------


def pki_config(pki_pem: bytes, allow: bool = True) -> VerifierConfig:
    return VerifierConfig(now=at(2026), allow_emulated=allow, emulated_snp_roots_pem=pki_pem)


def test_emulated_root_is_accepted_only_when_allowed() -> None:
    pki = make_snp_pki()
    raw = snp_report(pki)
    ev = snp_evidence(raw, {"VCEK": pki.vcek_der})
    claims = SnpVerifier(pki_config(pki.roots_pem)).verify(ev, binding_of(raw))
    assert claims.emulated is True and claims.fields["emulated"] is True
    with pytest.raises(EmulatedNotAllowed):
        SnpVerifier(pki_config(pki.roots_pem, allow=False)).verify(ev, binding_of(raw))
    with pytest.raises(CertificateChainInvalid):
        SnpVerifier(VerifierConfig(now=at(2026), allow_emulated=True)).verify(ev, binding_of(raw))


def test_a_verification_leaves_no_reference_cycles() -> None:
    # Emulated evidence is first tried against AMD's roots (which fail) and then accepted: what
    # the failed attempts leave behind must be freed at once, not wait for the cycle collector
    # (a KBS verifies hundreds of these a second; each cycle held the whole verification).
    pki = make_snp_pki()
    raw = snp_report(pki)
    ev = snp_evidence(raw, {"VCEK": pki.vcek_der})
    verifier = SnpVerifier(pki_config(pki.roots_pem))
    verifier.verify(ev, binding_of(raw))  # warm caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert verifier.verify(ev, binding_of(raw)).emulated is True
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_migration_agent_policy_bit() -> None:
    pki = make_snp_pki()
    raw = snp_report(pki, policy=0x30000 | 1 << 18)
    ev = snp_evidence(raw, {"VCEK": pki.vcek_der})
    with pytest.raises(MigrationAgentNotAllowed):
        SnpVerifier(pki_config(pki.roots_pem)).verify(ev, binding_of(raw))
    cfg = pki_config(pki.roots_pem).model_copy(update={"snp": SnpPolicy(allow_migration_agent=True)})
    assert SnpVerifier(cfg).verify(ev, binding_of(raw)).policy["policy_migrate_ma"] is True


def test_host_data_binds_the_initdata_digest() -> None:
    pki = make_snp_pki()
    digest = bytes.fromhex("0deccded0d87ec44702c7330fac3eb936b68dcca5c9f6b5df1fb3480c0b525ac")
    raw = snp_report(pki, host_data=digest)
    ev = snp_evidence(raw, {"VCEK": pki.vcek_der})
    v = SnpVerifier(pki_config(pki.roots_pem))
    claims = v.verify(ev, Binding(report_data=b"\x11" * 64, init_data_digest=digest))
    assert claims.init_data == digest.hex()
    with pytest.raises(InitDataMismatch, match="host_data"):
        v.verify(ev, Binding(report_data=b"\x11" * 64, init_data_digest=bytes(32)))


def test_vmpl_3_rejected_and_unknown_cpu_refused() -> None:
    pki = make_snp_pki()
    v = SnpVerifier(pki_config(pki.roots_pem))
    raw = snp_report(pki, vmpl=3)
    with pytest.raises(VmplNotAllowed):
        v.verify(snp_evidence(raw, {"VCEK": pki.vcek_der}), binding_of(raw))
    raw = snp_report(pki, family=0x17)
    with pytest.raises(EvidenceUnsupported, match="processor"):
        v.verify(snp_evidence(raw, {"VCEK": pki.vcek_der}), binding_of(raw))


def test_vcek_for_another_chip_is_rejected() -> None:
    pki = make_snp_pki(chip_id=b"\x01" * 64)
    other = make_snp_pki(chip_id=b"\x02" * 64)
    raw = snp_report(pki)
    ev = snp_evidence(raw, {"VCEK": other.vcek_der})
    with pytest.raises(TcbMismatch, match="another chip"):
        SnpVerifier(pki_config(other.roots_pem)).verify(ev, binding_of(raw))


# --- malformed input never escapes as anything but an AttestationError ----------------------


@pytest.mark.parametrize(
    "evidence",
    [
        b"",
        b"garbage",
        b"{}",
        b"[]",
        b'{"attestation_report": {}}',
        b"\x00" * 1183,
        b"\x00" * 1185,
        b'{"attestation_report": {"version": 2}}',
        b"\xff" * 4096,
    ],
)
def test_malformed_evidence(evidence: bytes) -> None:
    with pytest.raises(EvidenceMalformed):
        verifier().verify(evidence, Binding(report_data=b""))


def test_every_truncation_of_the_json_is_an_attestation_error() -> None:
    ev = read("trustee", "snp-e2e/evidence.json")
    for n in range(0, len(ev), 97):
        with pytest.raises(AttestationError):
            verifier().verify(ev[:n], Binding(report_data=E2E_REPORT_DATA))


def test_zero_report_is_unsupported_not_a_crash() -> None:
    with pytest.raises(EvidenceUnsupported):
        verifier().verify(bytes(0x4A0), Binding(report_data=b""))


def test_a_remembered_chain_does_not_vouch_for_an_altered_vcek() -> None:
    ev = read("trustee", "snp-e2e/evidence.json")
    v = verifier()
    v.verify(ev, Binding(report_data=E2E_REPORT_DATA))  # the genuine chain is now remembered
    obj = json.loads(ev)
    obj["cert_chain"][0]["data"][-1] ^= 0x01  # last byte of the VCEK's own signature
    with pytest.raises(CertificateChainInvalid):
        v.verify(json.dumps(obj).encode(), Binding(report_data=E2E_REPORT_DATA))
    with pytest.raises(CertificateExpired):  # and the validity period is still checked every time
        verifier(2024).verify(ev, Binding(report_data=E2E_REPORT_DATA))


def test_evidence_nested_beyond_the_recursion_limit_is_malformed() -> None:
    # Found by tests/fuzz: the RecursionError of the JSON decoder escaped the verifier.
    with pytest.raises(EvidenceMalformed, match="neither"):
        verifier().verify(b"[" * 100_000 + b"]" * 100_000, Binding(report_data=bytes(64)))


def test_vcek_with_a_malformed_issuer_name_is_malformed_evidence() -> None:
    # Found by tests/fuzz: cryptography decodes names lazily, so the certificate loaded and a
    # ValueError escaped the chain check later.
    der = read("trustee", "snp-e2e/e2e-snp-genoa-vcek.der")
    at = der.index(b"Engineering", der.index(load_der(der, "VCEK").issuer.public_bytes()))
    bad = der[:at] + b"\xff" + der[at + 1 :]  # the issuer's UTF8String is no longer UTF-8
    with pytest.raises(EvidenceMalformed, match="VCEK has a malformed field"):
        load_der(bad, "VCEK")
    raw = read("trustee", "snp-e2e/e2e-snp-genoa-report.bin")
    with pytest.raises(EvidenceMalformed, match="malformed field"):
        verifier().verify(snp_evidence(raw, {"VCEK": bad}), Binding(report_data=E2E_REPORT_DATA))


def test_vcek_with_an_unknown_x509_version_is_malformed_evidence() -> None:
    # Found by tests/fuzz: cryptography raised its own InvalidVersion (not a ValueError) for version 10.
    der = read("trustee", "snp-e2e/e2e-snp-genoa-vcek.der")
    at = der.index(b"\xa0\x03\x02\x01\x02") + 4  # [0] EXPLICIT INTEGER 2 (v3)
    with pytest.raises(EvidenceMalformed, match="is not a DER X.509 certificate"):
        load_der(der[:at] + b"\x0a" + der[at + 1 :], "VCEK")
