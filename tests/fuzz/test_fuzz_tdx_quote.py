"""Fuzz: TDX quotes (DCAP v4/v5) and Trustee's TDX evidence JSON, as an enclave sends them.

The quote parser raises only :class:`TeeError` leaves; the verifier (quote, PCK chain, QE report,
signatures, TCB against fixed Intel collateral) only :class:`AttestationError` leaves.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.evidence.errors import TeeError
from ccpipe.evidence.tdx_quote import parse_dcap_quote, parse_tdx_evidence, signed_portion
from ccpipe.stages.attest.errors import AttestationError
from ccpipe.stages.attest.verifiers import Binding, TdxCollateral, VerifierConfig
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier
from tests.conftest import vector
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, json_bytes_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

QUOTES = [vector(*p).read_bytes() for p in (("trustee", "tdx/tdx_quote_4.dat"), ("trustee", "tdx/tdx_quote_5.dat"),
                                            ("go-tdx-guest", "quote_v5_sample.dat"))]
RAW_QUOTES = st.sampled_from(QUOTES).flatmap(byte_mutations)
EVIDENCE_JSON = {"cc_eventlog": base64.b64encode(b"\x01\x02").decode(), "quote": base64.b64encode(QUOTES[0]).decode()}


def _parse(raw: bytes) -> None:
    parse_dcap_quote(raw)
    signed_portion(raw)


@fuzz_settings()
@given(RAW_QUOTES)
def test_fuzz_dcap_quote_parses_or_raises_tee_error(raw: bytes) -> None:
    parses_or_refuses(_parse, raw, TeeError)


@fuzz_settings()
@given(json_bytes_mutations(EVIDENCE_JSON))
def test_fuzz_tdx_evidence_json_parses_or_raises_tee_error(data: bytes) -> None:
    parses_or_refuses(parse_tdx_evidence, data, TeeError)


def _verifier() -> TdxVerifier:
    g = "go-tdx-guest"
    chain = vector(g, "tcb_info_issuer_chain.pem").read_bytes()
    collateral = TdxCollateral(vector(g, "sample_tcbInfo_response").read_bytes(),
                               vector(g, "sample_qeIdentity_response").read_bytes(), chain)
    return TdxVerifier(VerifierConfig(), collateral={"50806f000000": collateral})


VERIFIER = _verifier()


@fuzz_settings(deadline_ms=5000)
@given(st.one_of(RAW_QUOTES, json_bytes_mutations(EVIDENCE_JSON)))
def test_fuzz_tdx_verifier_verifies_or_raises_attestation_error(evidence: bytes) -> None:
    parses_or_refuses(lambda e: VERIFIER.verify(e, Binding(report_data=bytes(64))), evidence, AttestationError)
