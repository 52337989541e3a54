"""The one interface every verifier implements: evidence bytes + expected binding → claims.

A verifier MUST check everything that makes the evidence trustworthy on its own (signatures,
the endorsement chain to the vendor root, the binding of ``report_data`` and of the initdata
digest, platform TCB, debug) and MUST raise an :class:`~ccpipe.stages.attest.errors.AttestationError`
leaf naming the first failed check. It MUST NOT decide whether the measured code is the right
code beyond an explicitly expected measurement: comparing claims to reference values is the
policy engine's job. Verifiers are pure: no network, no clock other than the configured time.

Imports only :mod:`schemas`, pydantic and the standard library.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.exact_json import loads_exact


class Binding(BaseModel):
    """What the evidence must be bound to, computed by the caller from the session.

    ``report_data`` is the digest the KBS expects (SHA-384 of the canonical runtime data, 48
    bytes, or any value up to 64 bytes): it is zero-padded to the TEE's field size (64) before
    the comparison, exactly as Trustee does. ``init_data_digest`` is the digest of the initdata
    TOML (compared with SNP ``host_data`` padded/truncated to 32 bytes, TDX ``MRCONFIGID`` padded
    to 48). ``measurement`` pins the launch measurement (SNP MEASUREMENT, TDX MRTD) when set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_data: bytes = Field(max_length=64, description="Expected report_data (≤ 64 bytes, zero-padded).")
    init_data_digest: bytes | None = Field(
        default=None, max_length=64, description="Expected initdata digest (host_data / MRCONFIGID), if any."
    )
    measurement: bytes | None = Field(
        default=None, description="Expected launch measurement (SNP MEASUREMENT / TDX MRTD), if pinned."
    )


class Claims(BaseModel):
    """What verified evidence says, in one shape for every TEE.

    ``fields`` holds every parsed field of the report/quote under Trustee's claim names, for the
    policy engine; the typed attributes are the ones every consumer (events, audit) relies on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tee: TeeType = Field(description="TEE type of the evidence.")
    product: str = Field(description="Platform: Milan, Genoa, Turin, TDX 1.0/1.5, sample.")
    emulated: bool = Field(description="True when no hardware TEE produced it (sample or emulated root).")
    measurement: str = Field(description="Launch measurement as hex (SNP MEASUREMENT, TDX MRTD).")
    report_data: str = Field(description="The report_data field of the evidence as hex.")
    init_data: str | None = Field(description="host_data (SNP) / MRCONFIGID (TDX) as hex; None if absent.")
    tcb: dict[str, Any] = Field(description="Platform TCB: reported SVNs, TDX tcb_status, dates, advisories.")
    debug: bool = Field(description="True when the guest can be debugged by the host.")
    policy: dict[str, Any] = Field(description="Guest policy bits (SNP policy, TD attributes).")
    fields: dict[str, Any] = Field(description="All parsed fields, under Trustee's claim names.")


class JsonEvidence(bytes):
    """Evidence JSON bytes that also carry the decoded value they encode.

    A caller that had to parse the evidence anyway (the KBS reads it out of the ``/attest``
    body) builds it with :meth:`encode`, and a verifier takes :attr:`decoded` instead of parsing
    the bytes again. Made only by :meth:`encode`, so the bytes are always the value's encoding.
    """

    decoded: Any

    @classmethod
    def encode(cls, value: dict[str, Any]) -> JsonEvidence:
        """Compact JSON of ``value`` (orjson), remembering ``value``.

        Raises ``TypeError`` (or ``orjson.JSONEncodeError``) for what JSON cannot hold, e.g. an
        integer beyond 64 bits.
        """
        out = cls(orjson.dumps(value))
        out.decoded = value
        return out


def evidence_json(evidence: bytes) -> Any:
    """The JSON value of ``evidence``: the one it carries (:class:`JsonEvidence`), else decoded
    exactly as ``json.loads`` would (raising what it raises)."""
    return evidence.decoded if isinstance(evidence, JsonEvidence) else loads_exact(evidence)


@runtime_checkable
class Verifier(Protocol):
    """A verifier of one TEE's evidence."""

    def verify(self, evidence: bytes, expected: Binding) -> Claims:
        """Verify ``evidence`` and its binding to ``expected``; return its claims.

        ``evidence`` is Trustee's guest evidence JSON for the TEE (``primary_evidence``) or,
        where the TEE has one, the raw binary report/quote. Raises an
        :class:`~ccpipe.stages.attest.errors.AttestationError` leaf naming the failed check; never a
        parser's ``ValueError``/``IndexError``.
        """
        ...
