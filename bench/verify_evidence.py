"""Verifications per second for SEV-SNP and TDX evidence (median of several rounds).

The "raw cost of the cryptographic checks" floor for the KBS benchmark: every check of the
verifiers, over real vectors, with trust anchors and collateral already in memory (no I/O).
Peer measured in the same run: the bare signature operations alone (one ECDSA P-384 verify +
three RSA-PSS verifies for SNP; three ECDSA P-256 verifies for TDX excluding collateral), so
the overhead of parsing and policy is visible. The SNP verifier remembers certificate chains it
verified (by fingerprint; validity still checked per call), so a platform's second report costs
one ECDSA P-384 verify: "first sight" shows the cost with every cache cleared. The full
appraisal of the attestation service (verify + Rego attestation policy + ES256 EAR token) is
measured next to them.

Run: ``.venv/bin/python bench/verify_evidence.py [--rounds N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccpipe.evidence.snp_report import parse_snp_report, signed_portion
from ccpipe.evidence.tdx_quote import parse_tdx_quote
from ccpipe.evidence.tdx_quote import signed_portion as tdx_signed_portion
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.appraisal import AppraisalRequest, AttestationService
from ccpipe.stages.attest.ear import EarSigner
from ccpipe.stages.attest.policy_store import PolicyStore
from ccpipe.stages.attest.rvps import MemoryReferenceValueStore, sample_message
from ccpipe.stages.attest.verifiers import Binding, TdxCollateral, TdxPolicy, VerifierConfig, snp_certs
from ccpipe.stages.attest.verifiers import snp as snp_mod
from ccpipe.stages.attest.verifiers._x509 import load_der, load_pem_chain, verify_signed_by
from ccpipe.stages.attest.verifiers.snp import SnpVerifier
from ccpipe.stages.attest.verifiers.snp_certs import builtin_roots
from ccpipe.stages.attest.verifiers.tdx import TdxVerifier

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def main() -> None:
    """Print median verifications/s for each verifier and for its bare signature checks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()

    snp_ev = (VECTORS / "trustee/snp-e2e/evidence.json").read_bytes()
    snp_raw = (VECTORS / "trustee/snp-e2e/e2e-snp-genoa-report.bin").read_bytes()
    snp_bind = Binding(report_data=parse_snp_report(snp_raw).report_data)
    snp = SnpVerifier(VerifierConfig(now=datetime(2026, 1, 1, tzinfo=UTC)))
    vcek = load_der((VECTORS / "trustee/snp-e2e/e2e-snp-genoa-vcek.der").read_bytes(), "VCEK")
    roots = builtin_roots("Genoa")
    report = parse_snp_report(snp_raw)

    def snp_crypto() -> None:
        key = vcek.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        r, s = (int.from_bytes(x, "little") for x in (report.signature_r, report.signature_s))
        key.verify(encode_dss_signature(r, s), signed_portion(snp_raw), ec.ECDSA(hashes.SHA384()))
        for cert, issuer in ((vcek, roots.ask), (roots.ask, roots.ark), (roots.ark, roots.ark)):
            verify_signed_by(cert, issuer, "bench")

    g = VECTORS / "go-tdx-guest"
    tdx_raw = (VECTORS / "trustee/tdx/tdx_quote_4.dat").read_bytes()
    coll = TdxCollateral(
        (g / "sample_tcbInfo_response").read_bytes(),
        (g / "sample_qeIdentity_response").read_bytes(),
        (g / "tcb_info_issuer_chain.pem").read_bytes(),
        (g / "pckcrl").read_bytes(),
        (g / "rootcrl.der").read_bytes(),
    )
    tdx = TdxVerifier(
        VerifierConfig(now=datetime(2023, 7, 1, tzinfo=UTC), tdx=TdxPolicy(allow_debug=True)),
        collateral={"50806f000000": coll},
    )
    tdx_bind = Binding(report_data=parse_tdx_quote(tdx_raw).td_body.report_data)
    quote = parse_tdx_quote(tdx_raw)

    def tdx_crypto() -> None:
        pck, inter, root = load_pem_chain(quote.pck_chain_pem, "chain")

        def p256(key: object, sig: bytes, data: bytes) -> None:
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]

        att = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
        p256(att, quote.signature, tdx_signed_portion(tdx_raw))
        p256(pck.public_key(), quote.qe_report_signature, quote.qe_report.serialize())
        for cert, issuer in ((pck, inter), (inter, root)):
            verify_signed_by(cert, issuer, "bench")

    # The full appraisal: verifier + attestation policy (Rego) + EAR signing (ES256).
    rv = MemoryReferenceValueStore()
    rv.register(sample_message({"snp_launch_measurement": [report.measurement.hex()]}), scope="bench")
    service = AttestationService(
        VerifierConfig(now=datetime(2026, 1, 1, tzinfo=UTC)),
        reference_values=rv,
        policies=PolicyStore(),
        signer=EarSigner.generate(),
    )
    snp_req = AppraisalRequest(
        tee=TeeType.SNP, evidence=snp_ev, expected_report_data=report.report_data, workload_id="bench"
    )
    assert service.appraise(snp_req).ok, "the bench appraisal must succeed"

    def snp_cold() -> None:
        snp_mod._cert.cache_clear()
        snp_mod._vek.cache_clear()
        snp_certs._VERIFIED_CHAINS.clear()
        snp.verify(snp_ev, snp_bind)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("snp full appraisal (verify + Rego policy + EAR sign)", lambda: service.appraise(snp_req)),
        ("snp verify (trustee e2e Genoa, JSON)", lambda: snp.verify(snp_ev, snp_bind)),
        ("snp verify, first sight of the chain (caches cleared)", snp_cold),
        ("snp bare crypto (1 ECDSA-P384 + 3 RSA-PSS)", snp_crypto),
        ("tdx verify (tdx_quote_4 + collateral)", lambda: tdx.verify(tdx_raw, tdx_bind)),
        ("tdx bare crypto (2 quote/QE + 2 chain ECDSA-P256)", tdx_crypto),
    ]
    print(f"{'case':56} {'median verif/s':>14} {'ms each':>8}")
    for name, fn in cases:
        fn()
        rates = [rate(fn, args.seconds) for _ in range(args.rounds)]
        med = statistics.median(rates)
        print(f"{name:56} {med:14.0f} {1000 / med:8.3f}")


if __name__ == "__main__":
    main()
