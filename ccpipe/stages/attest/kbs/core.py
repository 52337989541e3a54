"""The KBS core: RCAR ``auth`` → ``attest`` → ``resource``, transport-independent.

Takes request bodies as bytes and session ids / bearer tokens as strings, returns protocol
models, and raises :class:`~ccpipe.stages.attest.kbs.errors.KbsError` leaves that the HTTP (and NATS)
adapters map to Trustee's error body. Every verdict is stored as an event *before* the answer
(see :mod:`.audit`): a refusal is recorded and then raised; a release is recorded and only
then returned. Imports neither aiohttp nor nats.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ccpipe.evidence.errors import InvalidInitdata
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.schemas.envelope import new_event_id
from ccpipe.schemas.kbs import (
    KBS_PROTOCOL_VERSION,
    NODE_PARAM,
    WORKLOAD_PARAM,
    Attestation,
    AttestationToken,
    Challenge,
    KbsRequest,
)
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.exact_json import loads_exact
from ccpipe.stages.attest.kbs.appraiser import AppraisalInput, Appraiser
from ccpipe.stages.attest.kbs.audit import AuditEvents, event_workload
from ccpipe.stages.attest.kbs.binding import (
    device_data_digest,
    import_tee_pubkey,
    runtime_data_digest,
    tee_pubkey_thumbprint,
)
from ccpipe.stages.attest.kbs.errors import (
    EvidenceRefused,
    KbsError,
    MalformedBody,
    ProtocolVersionMismatch,
    UnknownWorkload,
)
from ccpipe.stages.attest.kbs.node_proof import NodeKeys, attribute
from ccpipe.stages.attest.kbs.ports import References
from ccpipe.stages.attest.kbs.requirements import verified_tcb
from ccpipe.stages.attest.kbs.sessions import Session, SessionStore
from ccpipe.stages.attest.kbs.tokens import TokenBroker
from ccpipe.stages.attest.verifiers.interface import JsonEvidence

_log = logging.getLogger("ccpipe.kbs")

MAX_BODY_BYTES = 1 << 20
"""Largest accepted request body (evidence with a full certificate chain is ~10 KiB)."""
MAX_DEVICES = 16
"""Most devices one ``additional_evidence`` may carry evidence for."""


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes, what: str) -> M:
    """``body`` as ``model``; raises :class:`MalformedBody` naming the first bad field."""
    try:
        try:
            # Decoded (exactly as json would) and then validated: half the cost of pydantic's
            # own parser on an /attest body, most of which is evidence kept as decoded JSON.
            decoded = loads_exact(body)
        except ValueError:
            return model.model_validate_json(body)  # not JSON: pydantic's parser names the fault
        return model.model_validate(decoded)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise MalformedBody(f"{what} body: {loc}: {first['msg']}") from exc


def device_evidence(additional: str) -> dict[str, bytes]:
    """The devices' evidence in RCAR's ``additional_evidence``: a JSON object ``{tee: evidence}``, or ''.

    Raises :class:`MalformedBody` naming what is wrong (not JSON, not an object, too many devices,
    an entry that is neither a JSON object nor base64).
    """
    if not additional:
        return {}
    try:
        devices = loads_exact(additional.encode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise MalformedBody("tee-evidence.additional_evidence is not JSON") from exc
    if not isinstance(devices, dict) or not devices:
        raise MalformedBody("tee-evidence.additional_evidence must be a JSON object {tee: evidence} or ''")
    if len(devices) > MAX_DEVICES:
        raise MalformedBody(
            f"tee-evidence.additional_evidence names {len(devices)} devices (at most {MAX_DEVICES})")
    return {str(name): evidence_bytes(value, f"additional_evidence.{str(name)[:64]}")
            for name, value in devices.items()}


def evidence_bytes(value: Any, what: str) -> bytes:
    """The evidence bytes of one RCAR evidence member (``what`` names it in errors).

    Trustee's guest sends JSON evidence (kept as :class:`JsonEvidence`); a string holds base64 of
    a raw report/quote. Raises :class:`MalformedBody`.
    """
    if isinstance(value, dict):
        try:
            # Compact JSON (orjson: an SNP report with its certificate table, arrays of byte
            # values, is ~18 KiB) that hands the verifier the value already decoded.
            return JsonEvidence.encode(value)
        except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. an integer beyond 64 bits
            raise MalformedBody(f"tee-evidence.{what} cannot be encoded: {exc}") from exc
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedBody(f"tee-evidence.{what} string is not base64") from exc
    raise MalformedBody(f"tee-evidence.{what} must be a JSON object or a base64 string")


@dataclass
class KbsCore:
    """Sessions, appraisal, tokens and events of the RCAR handshake (resource release: :mod:`.resources`)."""

    sessions: SessionStore
    appraiser: Appraiser
    tokens: TokenBroker
    events: AuditEvents
    references: References
    inline_appraisal: bool = False
    """Appraise on the event loop: cheaper when each core runs its own KBS worker process."""
    node_keys: NodeKeys | None = None
    """Attested runner nodes' keys (``CCPIPE_NODE_ATTESTATIONS``): what a node proof is checked against."""

    async def auth(self, body: bytes) -> tuple[Challenge, Session]:
        """``POST /auth``: check the version and TEE, open a session, return its challenge.

        Stores ``attestation.challenged`` before returning the challenge and the sealed session.

        Raises :class:`MalformedBody`, :class:`ProtocolVersionMismatch` or :class:`UnknownWorkload`
        (after storing an ``attestation.rejected`` event).
        """
        request_id = uuid.uuid4().hex
        workload: str | None = None
        try:
            req = parse_body(KbsRequest, body, "auth")
            params = req.extra_params if isinstance(req.extra_params, dict) else {}
            workload = params.get(WORKLOAD_PARAM) if isinstance(params.get(WORKLOAD_PARAM), str) else None
            if req.version != KBS_PROTOCOL_VERSION:
                raise ProtocolVersionMismatch(
                    f"KBS Client Protocol Version Mismatch: {req.version!r}, this KBS speaks {KBS_PROTOCOL_VERSION}")
            if req.tee not in {t.value for t in TeeType}:
                raise EvidenceRefused(f"TEE type {req.tee!r} is not supported here")
            if workload is not None and event_workload(workload) != workload:
                raise UnknownWorkload(f"{WORKLOAD_PARAM} {workload[:80]!r} is not a workload id")
            node = params.get(NODE_PARAM)
            session = self.sessions.create(req.tee, workload_id=workload, node_id=str(node) if node else None,
                                           hash_alg="sha384", challenge_event_id=new_event_id())
        except KbsError as exc:
            await self.events.attestation_rejected(
                workload_id=workload, reason=exc.reason("kbs"), tee=None, evidence=None, outcome=None,
                node_id=None, thumbprint=None, request_id=request_id)
            raise
        assert session.challenge_event_id is not None
        await self.events.attestation_challenged(session, event_id=session.challenge_event_id,
                                                 request_id=request_id)
        return Challenge(nonce=session.nonce, extra_params=""), session

    async def reject(self, session: Session | None, exc: KbsError, *, evidence: bytes | None,
                     thumbprint: str | None = None, tee: str | None = None) -> None:
        """Store the ``attestation.rejected`` event of a refused ``/attest``."""
        await self.events.attestation_rejected(
            workload_id=session.workload_id if session else None, reason=exc.reason("kbs"),
            tee=tee or (session.tee if session else None), evidence=evidence, outcome=None,
            node_id=session.node_id if session else None, thumbprint=thumbprint, request_id=uuid.uuid4().hex,
            challenge_event_id=session.challenge_event_id if session else None)

    async def attest(self, session_id: str | None, body: bytes) -> tuple[AttestationToken, Session]:
        """``POST /attest``: consume the nonce, appraise the evidence, issue the token.

        Stores ``attestation.verified`` or ``attestation.rejected`` before returning/raising.
        Raises :class:`SessionMissing`, :class:`MalformedBody`, :class:`NonceInvalid`,
        :class:`TeePubkeyInvalid`, :class:`EvidenceRefused` or :class:`AuditUnavailable`.
        """
        session = self.sessions.peek(session_id)
        try:
            session = self.sessions.get(session_id, opened=session)
        except KbsError as exc:
            await self.reject(session, exc, evidence=body if len(body) <= MAX_BODY_BYTES else None)
            raise
        thumbprint: str | None = None
        try:
            try:
                att = parse_body(Attestation, body, "attest")
            except KbsError:
                await self.sessions.spend(session)  # a malformed attempt still uses up the nonce
                raise
            await self.sessions.begin_attestation(session, att.runtime_data.nonce)
            pubkey = att.runtime_data.tee_pubkey
            import_tee_pubkey(pubkey)
            thumbprint = tee_pubkey_thumbprint(pubkey)
            evidence = evidence_bytes(att.tee_evidence.primary_evidence, "primary_evidence")
            additional = att.tee_evidence.additional_evidence
            report_data = runtime_data_digest(session.nonce, pubkey, additional, hash_alg=session.hash_alg)
            devices = device_evidence(additional)
            expected_init = self._expected_init_data(session, att)
        except KbsError as exc:
            await self.reject(session, exc, evidence=body, thumbprint=thumbprint)
            raise
        # the node the session is attributed to is the one its proof shows, not the name it sent
        node = await attribute(session.node_id, att.node_proof, nonce=session.nonce, tee_pubkey=pubkey,
                               node_keys=self.node_keys)
        if node.claimed is not None:
            _log.warning("session for workload %s names node %r but %s: attributed to %s", session.workload_id,
                         node.claimed, node.problem, node.node_id or "no node")
        runtime = {"nonce": session.nonce, "tee-pubkey": pubkey, "additional-evidence": additional}
        request = AppraisalInput(
            tee=session.tee, evidence=evidence, expected_report_data=report_data,
            expected_init_data_digest=expected_init, workload_id=session.workload_id, runtime_data=runtime,
            devices=devices,
            expected_device_report_data=device_data_digest(session.nonce, pubkey, hash_alg=session.hash_alg)
            if devices else None)
        # By default in a worker thread: the event loop keeps serving while signatures and Rego
        # run (both release the GIL for much of their work, so a second core helps).
        outcome = (self.appraiser.appraise(request) if self.inline_appraisal
                   else await asyncio.to_thread(self.appraiser.appraise, request))
        request_id = uuid.uuid4().hex
        if not outcome.ok or outcome.rejection is not None:
            reason = outcome.rejection
            assert reason is not None
            await self.events.attestation_rejected(
                workload_id=session.workload_id, reason=reason, tee=session.tee, evidence=evidence,
                outcome=outcome, node_id=session.node_id, thumbprint=thumbprint, request_id=request_id,
                challenge_event_id=session.challenge_event_id, additional_evidence=additional)
            raise EvidenceRefused(f"evidence refused: {reason.message}", hint=reason.hint or None)
        event_id, jti = new_event_id(), uuid.uuid4().hex
        submod = dict(outcome.submods.get("cpu0") or {}) or {
            "ear.status": outcome.ear_status,
            "ear.trustworthiness-vector": outcome.trust_vector,
            "ear.appraisal-policy-id": outcome.policy_id,
            "ear.veraison.annotated-evidence": {
                session.tee: outcome.claims.get("fields", outcome.claims),
                "report_data": report_data.hex(),
                "init_data": expected_init.hex() if expected_init else None,
            },
        }
        # The tee-pubkey must sit at Trustee's EAR path whoever built the appraisal.
        annotated = dict(submod.get("ear.veraison.annotated-evidence") or {})
        annotated["runtime_data_claims"] = runtime
        submod["ear.veraison.annotated-evidence"] = annotated
        # The verified TEE type and TCB go into the token: every release checks them against the
        # workload's registered requirements (.requirements), whichever replica serves it.
        ccpipe = {"workload_id": session.workload_id, "node_id": node.node_id, "claimed_node_id": node.claimed,
                  "backend": outcome.backend,
                  "emulated": outcome.emulated, "evidence_digest": outcome.evidence_digest,
                  "attestation_event_id": event_id, "tee": outcome.tee,
                  "tcb": verified_tcb(outcome.tee, outcome.tcb)}
        token, claims = self.tokens.issue(submod, ccpipe, jti=jti)
        try:
            # Sealed before the verdict is stored: a session that cannot travel in a cookie (token
            # claims too large) is a refusal on the trail, not a verified attestation nobody got.
            attested = self.sessions.attested(session, claims, event_id)
        except KbsError as exc:
            await self.reject(session, exc, evidence=evidence, thumbprint=thumbprint, tee=session.tee)
            raise
        await self.events.attestation_verified(
            workload_id=session.workload_id, outcome=outcome, evidence=evidence, token_id=jti,
            node_id=node.node_id, claimed_node_id=node.claimed, thumbprint=thumbprint, request_id=request_id,
            event_id=event_id, challenge_event_id=session.challenge_event_id, additional_evidence=additional)
        return AttestationToken(token=token), attested

    def _expected_init_data(self, session: Session, att: Attestation) -> bytes | None:
        toml_digest: bytes | None = None
        if att.init_data is not None:
            if att.init_data.format != "toml":
                raise MalformedBody(f"init-data format {att.init_data.format!r} is not supported (toml)")
            try:
                toml_digest = initdata_digest(att.init_data.body)
            except InvalidInitdata as exc:
                raise MalformedBody(f"init-data: {exc.message}") from exc
        if session.workload_id is None:
            return toml_digest
        registered = self.references.scoped(session.workload_id, "init_data_digest")
        if not registered:
            raise UnknownWorkload(f"no initdata digest is registered for workload {session.workload_id!r}")
        try:
            want = bytes.fromhex(str(registered[-1]))
        except ValueError as exc:
            raise UnknownWorkload(f"the initdata digest registered for {session.workload_id!r} is not hex") from exc
        if toml_digest is not None and toml_digest != want:
            raise EvidenceRefused("init-data is not the initdata registered for this workload",
                                  code="kbs.init_data.mismatch")
        return want
