"""Fuzz: the certificates that come inside evidence, as the verifiers read them.

A VCEK/VLEK sent in an SEV-SNP certificate table (DER, AMD's extensions, the chain to AMD's
roots) and the PEM PCK chain inside a TDX quote (Intel's SGX extension, each link's signature).
Whatever the bytes, the verifier's helpers raise only :class:`AttestationError` leaves, and the
extension readers of :mod:`ccpipe.evidence` only :class:`MalformedEvidence`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given

from ccpipe.evidence.cert_extensions import parse_pck_extension
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.tdx_quote import parse_tdx_quote
from ccpipe.stages.attest.errors import AttestationError
from ccpipe.stages.attest.verifiers._x509 import check_validity, load_der, load_pem_chain, verify_signed_by
from ccpipe.stages.attest.verifiers.snp_certs import builtin_roots, vek_info, verify_vek_chain
from ccpipe.stages.attest.verifiers.tdx_collateral import pck_info
from tests.conftest import vector
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

VCEK = vector("trustee", "snp-e2e/e2e-snp-genoa-vcek.der").read_bytes()
VLEK = vector("trustee", "snp/test-vlek.der").read_bytes()
GENOA = builtin_roots("Genoa")
PCK_CHAIN = parse_tdx_quote(vector("trustee", "tdx/tdx_quote_4.dat").read_bytes()).pck_chain_pem
PCK_DER = x509.load_pem_x509_certificates(PCK_CHAIN)[0].public_bytes(Encoding.DER)
SGX_EXTENSION = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = x509.load_der_x509_certificate(PCK_DER).extensions.get_extension_for_oid(SGX_EXTENSION).value
assert isinstance(_SGX, x509.UnrecognizedExtension)
PCK_EXTENSION = _SGX.value
AT = datetime(2026, 6, 1, tzinfo=UTC)


def _read_vek(der: bytes) -> None:
    cert = load_der(der, "VCEK")
    info = vek_info(cert)
    verify_vek_chain(cert, info.kind, GENOA, provided_ark=None, provided_ask=None, at=AT)


@fuzz_settings(deadline_ms=5000)
@given(byte_mutations(VCEK) | byte_mutations(VLEK))
def test_fuzz_vcek_vlek_certificate_is_read_or_refused_with_attestation_error(der: bytes) -> None:
    parses_or_refuses(_read_vek, der, AttestationError)


def _read_pck_chain(pem: bytes) -> None:
    certs = load_pem_chain(pem, "PCK certificate chain")
    for cert, issuer in zip(certs, [*certs[1:], certs[-1]], strict=True):
        verify_signed_by(cert, issuer, "PCK chain link")
        check_validity(cert, AT, "PCK chain link")
    if certs:
        pck_info(certs[0])


@fuzz_settings(deadline_ms=5000)
@given(byte_mutations(PCK_CHAIN, max_random=4096))
def test_fuzz_pck_chain_pem_is_read_or_refused_with_attestation_error(pem: bytes) -> None:
    parses_or_refuses(_read_pck_chain, pem, AttestationError)


@fuzz_settings()
@given(byte_mutations(PCK_DER))
def test_fuzz_pck_certificate_der_is_read_or_refused_with_attestation_error(der: bytes) -> None:
    parses_or_refuses(lambda d: pck_info(load_der(d, "PCK certificate")), der, AttestationError)


@fuzz_settings()
@given(byte_mutations(PCK_EXTENSION))
def test_fuzz_sgx_extension_value_is_read_or_raises_malformed_evidence(value: bytes) -> None:
    parses_or_refuses(parse_pck_extension, value, MalformedEvidence)
