"""Fuzz: RCAR request bodies, as any client sends them to the KBS's ``/auth`` and ``/attest``.

Drives :class:`KbsCore` (the code behind both the HTTP and the NATS front ends) with an
appraiser that accepts any evidence, so mutated bodies reach everything after parsing: the
TEE public key, the evidence members, ``additional_evidence``, ``init-data``, the token and the
sealed session. Whatever the body, the core raises only :class:`KbsError` leaves.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import ECKey

from ccpipe.evidence.initdata import initdata_digest
from ccpipe.schemas.envelope import Event
from ccpipe.stages.attest.kbs.appraiser import AppraisalInput, AppraisalOutcome
from ccpipe.stages.attest.kbs.audit import AuditEvents
from ccpipe.stages.attest.kbs.core import KbsCore
from ccpipe.stages.attest.kbs.errors import KbsError
from ccpipe.stages.attest.kbs.sessions import SessionStore
from ccpipe.stages.attest.kbs.tokens import TokenBroker
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, json_bytes_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

NONCE = "NONCE-PLACEHOLDER"
INITDATA = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = "x"\n'
AUTH = {"version": "0.4.0", "tee": "snp", "extra-params": {"ccpipe-workload": "wl", "ccpipe-node": "n1"}}
ATTEST = {
    "runtime-data": {"nonce": NONCE, "tee-pubkey": ECKey.generate_key("P-256").as_dict(private=False)},
    "tee-evidence": {"primary_evidence": {"attestation_report": {"version": 3}, "cert_chain": None},
                     "additional_evidence": json.dumps({"tdx": "Z29vZA=="})},
    "init-data": {"format": "toml", "body": INITDATA},
}


class _Trail:
    async def publish(self, event: Event, msg_id: str) -> None:
        """Every event is accepted (the audit trail is not what is fuzzed here)."""


class _AcceptAll:
    def appraise(self, req: AppraisalInput) -> AppraisalOutcome:
        return AppraisalOutcome(
            ok=True, tee=req.tee, backend="fuzz", emulated=True, claims={}, ear_status="affirming",
            trust_vector={}, policy_id="p", policy_digest="sha256:" + "0" * 64, evidence_digest="sha256:" + "1" * 64)


class _References:
    """Every workload has :data:`INITDATA` registered; nothing else is."""

    def register(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        return []

    def get(self, scope: str | None, name: str) -> list[Any]:
        return []

    def scoped(self, scope: str, name: str) -> list[Any]:
        return [initdata_digest(INITDATA).hex()] if name == "init_data_digest" else []

    def check(self, message: dict[str, Any], *, scope: str | None = None) -> list[str]:
        return []


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> KbsCore:
    tokens = TokenBroker.for_data_dir(tmp_path_factory.mktemp("kbs"))
    return KbsCore(sessions=SessionStore(), appraiser=_AcceptAll(), tokens=tokens,
                   events=AuditEvents(_Trail().publish), references=_References(), inline_appraisal=True)


@fuzz_settings(deadline_ms=5000)
@given(body=json_bytes_mutations(AUTH))
def test_fuzz_kbs_auth_body_opens_a_session_or_raises_kbs_error(core: KbsCore, body: bytes) -> None:
    parses_or_refuses(lambda b: asyncio.run(core.auth(b)), body, KbsError)


async def _handshake(core: KbsCore, body: bytes) -> None:
    challenge, session = await core.auth(json.dumps(AUTH).encode())
    await core.attest(session.cookie, body.replace(NONCE.encode(), challenge.nonce.encode()))


@st.composite
def _init_data_bodies(draw: st.DrawFn) -> bytes:
    """The seed with other init-data text: TOML edits, any text, and nesting deeper than tomllib recurses."""
    text = draw(st.one_of(
        byte_mutations(INITDATA.encode()).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.text(max_size=200),
        st.just('version = "0.1.0"\nalgorithm = "sha384"\n[data]\na = ' + "[" * 5000 + "]" * 5000),
    ))
    return json.dumps({**ATTEST, "init-data": {"format": "toml", "body": text}}).encode()


@fuzz_settings(deadline_ms=5000)
@given(body=json_bytes_mutations(ATTEST) | _init_data_bodies())
def test_fuzz_kbs_attest_body_issues_a_token_or_raises_kbs_error(core: KbsCore, body: bytes) -> None:
    parses_or_refuses(lambda b: asyncio.run(_handshake(core, b)), body, KbsError)


def test_the_attest_seed_passes_so_mutations_start_from_a_full_handshake(core: KbsCore) -> None:
    asyncio.run(_handshake(core, json.dumps(ATTEST).encode()))
