"""RCAR client (what the enclave runner uses): auth → attest → resource, JWE decrypted inside.

Each :class:`KbsSession` generates an ephemeral key pair (EC P-256 for ECDH-ES+A256KW by
default, or RSA-3072 for RSA-OAEP-256), binds it with the challenge nonce into the evidence's
report_data (:func:`~ccpipe.stages.attest.kbs.binding.runtime_data_digest`), and decrypts released
resources with it; the private key never leaves the process. Refusals raise
:class:`~ccpipe.stages.attest.kbs.errors.KbsRefused` carrying the server's Trustee error type and
status; unreachable or 5xx KBS raise :class:`~ccpipe.stages.attest.kbs.errors.KbsUnavailable`.
Imports aiohttp and pure cores only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ccpipe.crypto import jose
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.schemas.json_input import load_json
from ccpipe.schemas.kbs import (
    KBS_PROTOCOL_VERSION,
    NODE_PARAM,
    NODE_PROOF_MEMBER,
    WORKLOAD_PARAM,
    AttestationToken,
    Challenge,
)
from ccpipe.schemas.nodes import node_proof_message
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.kbs.binding import runtime_data_digest
from ccpipe.stages.attest.kbs.errors import KbsClientError, KbsRefused, KbsUnavailable
from ccpipe.stages.attest.kbs.store import check_resource_path

RESOURCE_ALGORITHMS = (jose.EC_ALG, jose.RSA_OAEP_256, jose.CONTENT_ENC)
"""What a KBS resource JWE may use (Trustee's choices for the key this session sends)."""

NodeSigner = Callable[[bytes], bytes]
"""Signs a node proof (:func:`~ccpipe.schemas.nodes.node_proof_message`) with the runner's node key."""

COOKIE = "kbs-session-id"
KeyAlg = Literal["EC", "RSA"]
_EVIDENCE_SLOT = "ccpipe-evidence-slot-9f3c1e"
"""Placeholder string replaced by the evidence JSON in the encoded ``/attest`` body."""


def _evidence_object(evidence: bytes) -> bytes:
    """``evidence`` if it is one JSON object (as backends produce), else raises :class:`KbsClientError`."""
    stripped = evidence.strip()
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        raise KbsClientError("the evidence backend produced no JSON object")
    return stripped


class Transport(Protocol):
    """Another way to reach the KBS than HTTP (e.g. :class:`~ccpipe.stages.attest.kbs.nats_service.NatsTransport`)."""

    async def request(self, method: str, path: str, body: bytes | None, session: str | None,
                      bearer: str | None = None) -> tuple[int, bytes, str | None]:
        """Send one RCAR request; returns (status, body, session id set by the KBS)."""
        ...


class KbsSession:
    """One attestation, several resources: ``async with KbsSession(...) as s: await s.get_resource(p)``."""

    def __init__(
        self,
        kbs_url: str,
        backend: EvidenceBackend,
        *,
        workload_id: str,
        tee: TeeType | str,
        init_data: bytes | None = None,
        key_alg: KeyAlg = "EC",
        node_id: str | None = None,
        http: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        transport: Transport | None = None,
        context_headers: Callable[[dict[str, str]], None] | None = None,
        node_signer: NodeSigner | None = None,
    ) -> None:
        """Prepare a session; nothing is sent until :meth:`attest` (or the first resource).

        With ``transport`` (e.g. RCAR over NATS) ``kbs_url`` is only used in messages.
        ``context_headers`` adds the caller's context (a W3C ``traceparent``) to each HTTP request.
        With ``node_id`` and ``node_signer`` (the node key's Ed25519 signing function) the session
        proves which attested runner node asks; a ``node_id`` alone is only a claim, and the
        KBS attributes nothing to it.
        """
        self.kbs_url = kbs_url.rstrip("/")
        self.backend = backend
        self.workload_id = workload_id
        self.tee = TeeType(tee).value
        self.init_data = init_data
        self.node_id = node_id
        self.node_signer = node_signer
        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if key_alg == "EC" else rsa.generate_private_key(65537, 3072))
        self.tee_pubkey: dict[str, Any] = jose.public_jwk(self._key)
        self._transport = transport
        self._http = http
        self._own_http = http is None and transport is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._cookie: str | None = None
        self._context_headers = context_headers
        self.token: str | None = None

    async def __aenter__(self) -> KbsSession:
        """Open the HTTP session (if none was given)."""
        if self._http is None and self._transport is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the HTTP session if this object opened it."""
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def _http_request(self, method: str, path: str, payload: bytes | None) -> tuple[int, bytes, str | None]:
        assert self._http is not None, "use 'async with KbsSession(...)'"
        headers = {"Cookie": f"{COOKIE}={self._cookie}"} if self._cookie else {}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self._context_headers is not None:
            self._context_headers(headers)
        try:
            async with self._http.request(method, f"{self.kbs_url}/kbs/v0/{path}", data=payload, headers=headers,
                                          timeout=self._timeout) as resp:
                data = await resp.read()
                cookie = resp.cookies.get(COOKIE)
                return resp.status, data, cookie.value if cookie is not None else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KbsUnavailable(f"KBS at {self.kbs_url} did not answer {method} {path}: {exc!r}") from exc

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    payload: bytes | None = None) -> tuple[bytes, str | None]:
        if body is not None:
            payload = json.dumps(body).encode()
        if self._transport is not None:
            status, data, cookie = await self._transport.request(method, path, payload, self._cookie)
        else:
            status, data, cookie = await self._http_request(method, path, payload)
        if status == 200:
            return data, cookie
        try:
            info = load_json(data)
            error_type, detail = str(info["type"]), str(info["detail"])
        except (ValueError, KeyError, TypeError):
            error_type, detail = "unknown", data[:200].decode(errors="replace")
        if status >= 500:
            raise KbsUnavailable(f"KBS {method} {path} answered {status}: {detail}")
        raise KbsRefused(f"KBS refused {method} {path} ({status} {error_type.rsplit('/', 1)[-1]}): {detail}",
                         status=status, error_type=error_type)

    async def attest(self) -> str:
        """Run auth → attest; returns the attestation token. Raises :class:`KbsRefused` / :class:`KbsUnavailable`."""
        params: dict[str, Any] = {WORKLOAD_PARAM: self.workload_id, "supported-hash-algorithms": ["sha384"]}
        if self.node_id:
            params[NODE_PARAM] = self.node_id
        self._cookie = None
        data, cookie = await self._call("POST", "auth", {"version": KBS_PROTOCOL_VERSION, "tee": self.tee,
                                                        "extra-params": params})
        try:
            challenge = Challenge.model_validate_json(data)
        except ValueError as exc:
            raise KbsClientError("the KBS's challenge is not RCAR JSON") from exc
        if cookie is None:
            raise KbsClientError("the KBS set no kbs-session-id cookie")
        self._cookie = cookie
        report_data = runtime_data_digest(challenge.nonce, self.tee_pubkey, "")
        try:
            init_text = self.init_data.decode() if self.init_data is not None else None
        except UnicodeDecodeError as exc:
            raise KbsClientError("init_data must be the UTF-8 initdata TOML document") from exc
        host_data = initdata_digest(init_text) if init_text is not None else None
        evidence = self.backend.get_evidence(report_data, host_data=host_data)
        body: dict[str, Any] = {
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": self.tee_pubkey},
            "tee-evidence": {"primary_evidence": _EVIDENCE_SLOT, "additional_evidence": ""},
        }
        if init_text is not None:
            body["init-data"] = {"format": "toml", "body": init_text}
        if self.node_id and self.node_signer is not None:
            signature = self.node_signer(node_proof_message(self.node_id, challenge.nonce, self.tee_pubkey))
            body[NODE_PROOF_MEMBER] = {"node_id": self.node_id,
                                       "signature": jose.b64url(signature)}
        # The backend's evidence JSON goes in verbatim: parsing and re-encoding ~18 KiB of SNP
        # report and certificate table would cost more than the rest of the request.
        # (A quoted slot cannot occur inside another JSON string: its quotes would be escaped.)
        slot = json.dumps(_EVIDENCE_SLOT).encode()
        encoded = json.dumps(body).encode().replace(slot, _evidence_object(evidence.evidence), 1)
        data, cookie = await self._call("POST", "attest", payload=encoded)
        self._cookie = cookie or self._cookie  # the attested session comes back as a new cookie
        try:
            self.token = AttestationToken.model_validate_json(data).token
        except ValueError as exc:
            raise KbsClientError("the KBS's attestation answer is not {'token': …}") from exc
        return self.token

    async def get_resource(self, resource_path: str) -> bytes:
        """The plaintext of ``resource_path`` (``<repo>/<type>/<tag>``), attesting first if needed.

        Raises :class:`KbsRefused` (e.g. ``PolicyDeny``), :class:`KbsUnavailable`,
        :class:`KbsClientError` for a JWE that does not decrypt, or ``InvalidResourcePath``.
        """
        check_resource_path(resource_path)
        if self.token is None:
            await self.attest()
        data, _ = await self._call("GET", f"resource/{resource_path}")
        return self.decrypt(data)

    def decrypt(self, data: bytes) -> bytes:
        """Open a flattened JWE addressed to this session's key."""
        try:
            obj = load_json(data)
            if not isinstance(obj, dict):
                raise ValueError("the answer is not a JSON object")
            return jose.decrypt(obj, self._key, algorithms=RESOURCE_ALGORITHMS)
        except ValueError as exc:
            raise KbsClientError(f"the resource JWE does not decrypt with this session's key: {exc}") from exc


async def fetch_resource(
    kbs_url: str,
    backend: EvidenceBackend,
    resource_path: str,
    *,
    workload_id: str,
    tee: TeeType | str,
    init_data: bytes | None = None,
    key_alg: KeyAlg = "EC",
    node_id: str | None = None,
    http: aiohttp.ClientSession | None = None,
    timeout_s: float = 10.0,
    transport: Transport | None = None,
    node_signer: NodeSigner | None = None,
) -> bytes:
    """One full RCAR exchange with a fresh ephemeral key: the plaintext of ``resource_path``.

    Raises :class:`KbsRefused` (server's ``error_type``/``status``), :class:`KbsUnavailable`
    (retryable) or :class:`KbsClientError`.
    """
    async with KbsSession(kbs_url, backend, workload_id=workload_id, tee=tee, init_data=init_data,
                          key_alg=key_alg, node_id=node_id, http=http, timeout_s=timeout_s,
                          transport=transport, node_signer=node_signer) as session:
        return await session.get_resource(resource_path)
