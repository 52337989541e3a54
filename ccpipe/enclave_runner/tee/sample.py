"""The sample TEE: Trustee's unsigned development evidence, ``{"svn": "1", "report_data": <base64>}``.

Nothing signs it and anything can forge it; it exists so the whole protocol runs without any
TEE. Trustee's sample verifier compares the base64-decoded ``report_data`` with the expected
binding **exactly** (no padding), so it is embedded as given, like guest-components' sample
attester does. Trustee's default resource policy refuses sample evidence.
"""

from __future__ import annotations

import base64
import json

from ccpipe.evidence.interface import REPORT_DATA_SIZE, BackendInfo, EvidenceResult, pad_field
from ccpipe.schemas.spec_rules import TeeType

SAMPLE_SVN = "1"


class SampleBackend:
    """Sample evidence (development only)."""

    def __init__(self, svn: str = SAMPLE_SVN) -> None:
        """``svn`` is the security version the evidence claims."""
        self._svn = svn
        self._info = BackendInfo(TeeType.SAMPLE, "sample", True, "sample TEE (no hardware, unsigned)")

    def describe(self) -> BackendInfo:
        """The sample TEE."""
        return self._info

    def get_evidence(self, report_data: bytes, *, host_data: bytes | None = None) -> EvidenceResult:
        """Sample evidence for ``report_data`` (≤ 64 bytes, unpadded); the sample TEE has no host data.

        Raises :class:`InvalidReportData` for more than 64 bytes.
        """
        rd = pad_field(report_data, REPORT_DATA_SIZE, "report_data")[: len(report_data)]
        doc = {"svn": self._svn, "report_data": base64.b64encode(rd).decode()}
        evidence = json.dumps(doc, separators=(",", ":")).encode()
        return EvidenceResult(TeeType.SAMPLE, "sample", True, self._info.product, evidence, rd)
