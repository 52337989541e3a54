"""Trustee's ``sample`` TEE: development evidence with no signature at all.

Evidence: ``{"svn": "1", "report_data": "<base64 of the binding digest>"}``. Anyone can write
it, so it is accepted only when the configuration allows development evidence, and its claims
are always marked ``emulated``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.attest.errors import EmulatedNotAllowed, EvidenceMalformed, InitDataMismatch, ReportDataMismatch
from ccpipe.stages.attest.verifiers.config import VerifierConfig
from ccpipe.stages.attest.verifiers.interface import Binding, Claims

SAMPLE_LAUNCH_DIGEST = "abcde"


class SampleVerifier:
    """Accepts sample evidence whose report_data equals the expected binding exactly."""

    def __init__(self, config: VerifierConfig) -> None:
        """Build from ``config``; refuses every evidence unless ``config.allow_emulated``."""
        self._config = config

    def verify(self, evidence: bytes, expected: Binding) -> Claims:
        """Check the sample evidence's report_data against ``expected``.

        (1) development evidence must be allowed; (2) parse the JSON; (3) the base64
        ``report_data`` must equal the expected digest byte for byte (Trustee does not pad
        here). Raises :class:`EmulatedNotAllowed`, :class:`EvidenceMalformed`,
        :class:`ReportDataMismatch` or :class:`InitDataMismatch`.
        """
        if not self._config.allow_emulated:
            raise EmulatedNotAllowed("sample evidence carries no signature and development evidence is not allowed")
        try:
            obj = json.loads(evidence)
            svn = str(obj["svn"])
            report_data = base64.b64decode(obj["report_data"], validate=True)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise EvidenceMalformed('sample evidence must be JSON {"svn": …, "report_data": base64}') from exc
        if not hmac.compare_digest(report_data, expected.report_data):
            raise ReportDataMismatch(
                f"sample report_data is {report_data.hex()[:32]}…, expected {expected.report_data.hex()[:32]}…"
            )
        # The sample TEE has no field that could carry an initdata digest.
        if expected.init_data_digest is not None and obj.get("init_data") not in (
            None,
            base64.b64encode(expected.init_data_digest).decode(),
        ):
            raise InitDataMismatch("sample evidence names another initdata digest")
        init = expected.init_data_digest.hex() if expected.init_data_digest is not None else None
        fields = {
            "svn": svn,
            "report_data": report_data.hex(),
            "launch_digest": SAMPLE_LAUNCH_DIGEST,
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
            "init_data": init,
            "emulated": True,
        }
        return Claims(
            tee=TeeType.SAMPLE,
            product="sample",
            emulated=True,
            measurement=SAMPLE_LAUNCH_DIGEST.encode().hex(),
            report_data=report_data.hex(),
            init_data=init,
            tcb={"svn": svn},
            debug=False,
            policy={},
            fields=fields,
        )
