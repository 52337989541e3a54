"""KBS protocol bodies (Trustee's RCAR protocol, version 0.4.0) as pydantic models.

Wire spellings follow Trustee's ``kbs-types``: kebab-case at the top level of ``Request``,
``Attestation`` and ``Challenge`` (``extra-params``, ``runtime-data``, ``tee-evidence``,
``tee-pubkey``), snake_case inside ``tee-evidence``. Models parse once: a body that does not fit
is refused by the KBS with a ``SerdeError`` naming the field. Imports nothing of the project
except :mod:`ccpipe.schemas.nodes` (the node id pattern).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccpipe.schemas.nodes import NODE_ID_PATTERN

KBS_PROTOCOL_VERSION = "0.4.0"
"""The only RCAR version Trustee (and ccpipe) accepts."""

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
"""Namespace of Trustee's error ``type`` strings (not a resolvable URL)."""

WORKLOAD_PARAM = "ccpipe-workload"
"""``extra-params`` key naming the ccpipe workload a request is for."""

NODE_PROOF_MEMBER = "ccpipe-node-proof"
"""``/attest`` body member by which a runner proves its node (:class:`NodeProof`); releases are
attributed to the node it proves, never to the ``ccpipe-node`` name of ``extra-params``."""
NODE_PARAM = "ccpipe-node"
"""``extra-params`` key with the node the requester says it runs on (a claim, kept as such)."""

TEE_REQUIREMENTS_TYPE = "tee-requirements"
"""Resource type of a workload's ``[tee]`` requirements (``TeeRequirements`` as JSON) in the KBS:
``ccpipe/<workload>/tee-requirements``, registered by the sign stage with the admin key. The KBS
releases none of the workload's resources to evidence that does not meet them."""


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    # Guests may send members newer than this schema; they are kept, not refused.
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class KbsRequest(_Open):
    """``POST /kbs/v0/auth`` body."""

    version: str = Field(description="RCAR protocol version; must be 0.4.0.")
    tee: str = Field(description="TEE type (snp, tdx, sample, …; Trustee's serde names).")
    extra_params: dict[str, Any] | str = Field(
        default_factory=dict, alias="extra-params",
        description="Free-form; ccpipe reads 'ccpipe-workload' and 'supported-hash-algorithms'.",
    )


class Challenge(_Wire):
    """200 reply to ``/auth``."""

    nonce: str = Field(description="Base64 (standard) of 32 random bytes; single use.")
    extra_params: dict[str, Any] | str = Field(
        default="", alias="extra-params", description="Empty string except for IBM SE."
    )


class InitData(_Wire):
    """Initdata sent with the attestation (``init-data``)."""

    format: str = Field(description="Only 'toml' is accepted.")
    body: str = Field(description="The initdata TOML text, exactly as bound at launch.")


class RuntimeData(_Wire):
    """``runtime-data``: the challenge nonce and the TEE's ephemeral public key."""

    nonce: str = Field(description="The nonce of the session's challenge.")
    tee_pubkey: dict[str, Any] = Field(alias="tee-pubkey", description="Public JWK (EC P-256/P-521 or RSA).")


class TeeEvidence(_Wire):
    """``tee-evidence``: the primary evidence and the devices' evidence."""

    primary_evidence: Any = Field(description="TEE-specific evidence JSON (Trustee's guest format).")
    additional_evidence: str = Field(default="", description="JSON text of device evidence; '' when none.")


class NodeProof(_Wire):
    """``ccpipe-node-proof``: the requesting runner node shows it holds the key it attested with.

    ``signature`` is the node key's Ed25519 signature (base64url) over
    :func:`ccpipe.schemas.nodes.node_proof_message` of the node id, this session's nonce and
    the TEE public key, so it proves nothing outside this one session.
    """

    node_id: str = Field(pattern=NODE_ID_PATTERN, description="The node that asks (its inventory key).")
    signature: str = Field(max_length=128, description="Base64url Ed25519 signature by the node key.")


class Attestation(_Wire):
    """``POST /kbs/v0/attest`` body."""

    init_data: InitData | None = Field(default=None, alias="init-data", description="Initdata, if any.")
    runtime_data: RuntimeData = Field(alias="runtime-data", description="Nonce and TEE public key.")
    tee_evidence: TeeEvidence = Field(alias="tee-evidence", description="The evidence.")
    node_proof: NodeProof | None = Field(
        default=None, alias=NODE_PROOF_MEMBER,
        description="ccpipe's addition: which attested runner node asks (Trustee's guest sends none).")


class AttestationToken(_Wire):
    """200 reply to ``/attest``."""

    token: str = Field(description="Attestation token: EAR claims in an ES256 JWT.")


class FlattenedJwe(_Wire):
    """200 reply to a resource request: flattened JSON JWE (RFC 7516 §7.2.2)."""

    protected: str = Field(description="Base64url of the protected header; also the GCM AAD, used verbatim.")
    encrypted_key: str = Field(description="Base64url of the wrapped content key.")
    iv: str = Field(description="Base64url of the 12-byte GCM IV.")
    ciphertext: str = Field(description="Base64url of the ciphertext.")
    tag: str = Field(description="Base64url of the 16-byte GCM tag.")


class ErrorInformation(_Wire):
    """Every non-200 reply: ``{"type": "<prefix><Variant>", "detail": "…"}``."""

    type: str = Field(description="Trustee error variant under ERROR_TYPE_PREFIX.")
    detail: str = Field(description="What was wrong, for the requester (no policy internals).")


class AttestationPolicyBody(_Wire):
    """``POST /kbs/v0/attestation-policy``."""

    type: Literal["rego"] = Field(default="rego", description="Policy language.")
    policy_id: str = Field(description="Policy id (e.g. default_cpu).")
    policy: str = Field(description="Base64url (no padding) of the Rego text.")


class ResourcePolicyBody(_Wire):
    """``POST /kbs/v0/resource-policy``; ``prefix`` (ccpipe extension) scopes it to a path prefix."""

    policy: str = Field(description="Base64url (no padding) of the Rego text.")
    prefix: str | None = Field(default=None, description="Resource path prefix it applies to; None = default.")
    policy_id: str | None = Field(default=None, description="Id to store it under (ccpipe extension).")


class ReferenceValueMessage(_Wire):
    """``POST /kbs/v0/reference-value``: an RVPS message."""

    version: str = Field(description="Must be 0.1.0.")
    type: str = Field(description="Provenance type (sample).")
    payload: str = Field(description="Base64 of the provenance JSON ({name: [values]}).")
