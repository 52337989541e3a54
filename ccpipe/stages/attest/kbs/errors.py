"""The KBS family of errors: each leaf knows its Trustee wire variant and HTTP status.

Trustee answers every failure with ``{"type": ".../errors/<Variant>", "detail": …}`` and status
401 (404 for an unknown path). ccpipe keeps those variants and statuses where a guest relies on
them (401 makes a CoCo guest re-attest) and uses clearer ones where none does: 400 for a body
that does not parse, 413 for an oversized body, 429 for an /auth past the client's rate, 503
when the audit event cannot be stored.
Imports only :mod:`schemas` and :mod:`ccpipe.stages.attest.errors`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.kbs import ERROR_TYPE_PREFIX


class KbsError(CcpipeError):
    """A request the KBS refuses; ``variant`` and ``status`` are its wire form."""

    code = "kbs.error"
    variant = "AttestationError"
    status = 401

    @property
    def error_type(self) -> str:
        """Trustee's ``type`` string of this error."""
        return ERROR_TYPE_PREFIX + self.variant


class ProtocolVersionMismatch(KbsError):
    """The client speaks another RCAR version than 0.4.0."""

    code = "kbs.protocol.version"
    default_hint = "use a KBS client that speaks RCAR protocol version 0.4.0"


class MalformedBody(KbsError):
    """The body is not JSON or does not have the protocol's shape."""

    code = "kbs.body.malformed"
    variant = "SerdeError"
    status = 400
    default_hint = "send the body exactly as the RCAR protocol defines it"


class BodyTooLarge(KbsError):
    """The body exceeds the KBS's size limit."""

    code = "kbs.body.too_large"
    variant = "SerdeError"
    status = 413
    default_hint = "evidence and resources are small; check what the client sends"


class UnknownWorkload(KbsError):
    """The request names no workload, or one with no registered reference values."""

    code = "kbs.workload.unknown"
    default_hint = "send extra-params {'ccpipe-workload': <id>} for a workload the sign stage registered"


class SessionMissing(KbsError):
    """No session cookie, an unknown one, or an expired session."""

    code = "kbs.session.missing"
    variant = "TokenNotFound"
    default_hint = "start again with POST /kbs/v0/auth"


class NonceInvalid(KbsError):
    """The runtime-data nonce is not the session's, or the session's nonce was already used."""

    code = "kbs.nonce.invalid"
    default_hint = "every attestation needs a fresh challenge from POST /kbs/v0/auth"


class TeePubkeyInvalid(KbsError):
    """The tee-pubkey JWK is not an accepted key (EC P-256/P-521 or RSA ≥ 2048)."""

    code = "kbs.tee_pubkey.invalid"
    variant = "JweError"
    default_hint = "send an EC P-256 (ECDH-ES+A256KW) or RSA (RSA-OAEP-256) public JWK"


class EvidenceRefused(KbsError):
    """The attestation service did not accept the evidence."""

    code = "kbs.attestation.rejected"
    default_hint = "the enclave's evidence was refused; see the attestation.rejected event"


class TokenInvalid(KbsError):
    """The attestation token is missing, expired or not signed by this KBS."""

    code = "kbs.token.invalid"
    variant = "TokenVerifierError"
    default_hint = "attest again to get a fresh token"


class InvalidResourcePath(KbsError):
    """The path is not ``<repository>/<type>/<tag>`` of [A-Za-z0-9._-] segments."""

    code = "kbs.path.invalid"
    variant = "InvalidRequestPath"
    status = 404
    default_hint = "use /kbs/v0/resource/<repository>/<type>/<tag>"


class PolicyDenied(KbsError):
    """The resource policy refused the release (the failed rule goes only to the audit trail)."""

    code = "kbs.policy.denied"
    variant = "PolicyDeny"
    default_hint = "the attested enclave is not allowed this resource"


class ResourceNotFound(KbsError):
    """An allowed requester asked for a resource that is not stored."""

    code = "kbs.resource.not_found"
    variant = "PluginInternalError"
    status = 404
    default_hint = "register the resource first (the sign stage does it for image keys)"


class AdminAuthFailed(KbsError):
    """An admin request without a valid admin token, or with a role not allowed the endpoint."""

    code = "kbs.admin.denied"
    variant = "AdminAuthAccess"
    default_hint = "send Authorization: Bearer <EdDSA JWT signed by the admin key> with a role allowed here"


class AuthRateExceeded(KbsError):
    """A client opened more handshakes in one interval than the KBS allows one client."""

    code = "kbs.auth.rate"
    variant = "HTTPFailed"  # Trustee has no rate-limit variant; the 429 status says what happened
    status = 429
    default_hint = "wait for the next interval; a node opens one handshake per launch"


class AdminBodyInvalid(KbsError):
    """An admin body (policy, reference values) is malformed."""

    code = "kbs.admin.body"
    variant = "SerdeError"
    status = 400
    default_hint = "check the body against the KBS admin API"


class AuditUnavailable(KbsError, TransientError):
    """The audit event could not be stored, so nothing is released."""

    code = "kbs.audit.unavailable"
    variant = "PluginInternalError"
    status = 503
    default_hint = "the event bus is down; retry when NATS is reachable"


class ResourceStoreError(CcpipeError):
    """The resource store is unreadable, or a record does not decrypt (wrong KEK, tampering)."""

    code = "kbs.store.error"
    default_hint = "check the KEK file and the resource backend"


class KbsRefused(CcpipeError):
    """Client side: the KBS answered with an error; ``error_type`` and ``status`` are the server's."""

    code = "kbs.client.refused"
    default_hint = "see the KBS's key.denied / attestation.rejected event for the reason"

    def __init__(self, message: str, *, status: int, error_type: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.error_type = error_type

    @property
    def variant(self) -> str:
        """The Trustee variant (the last part of ``error_type``)."""
        return self.error_type.rsplit("/", 1)[-1]


class KbsUnavailable(TransientError):
    """Client side: the KBS cannot be reached or answered 5xx."""

    code = "kbs.client.unavailable"
    default_hint = "check that the KBS runs (ccpipe endpoints) and retry"


class KbsClientError(CcpipeError):
    """Client side: the KBS's answer cannot be used (not JSON, a JWE that does not decrypt)."""

    code = "kbs.client.response"
    default_hint = "the KBS is not speaking RCAR 0.4.0 or the response was altered"
