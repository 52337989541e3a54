"""Checks of the evidence against the caller's :class:`~ccpipe.stages.attest.verifiers.interface.Binding`,
shared by every verifier (Trustee's ``regularize_data`` semantics)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager

from ccpipe.evidence.errors import MalformedEvidence, UnsupportedEvidence
from ccpipe.stages.attest.errors import (
    EvidenceMalformed,
    EvidenceUnsupported,
    InitDataMismatch,
    MeasurementMismatch,
    ReportDataMismatch,
)
from ccpipe.stages.attest.verifiers.interface import Binding


@contextmanager
def layout_errors() -> Iterator[None]:
    """Turn the errors of the layouts' one home (:mod:`ccpipe.evidence`) into the verifier's:
    :class:`EvidenceMalformed` / :class:`EvidenceUnsupported`."""
    try:
        yield
    except UnsupportedEvidence as exc:
        raise EvidenceUnsupported(exc.message) from exc
    except MalformedEvidence as exc:
        raise EvidenceMalformed(exc.message) from exc


def regularize(value: bytes, size: int) -> bytes:
    """Zero-pad or truncate ``value`` to ``size`` bytes, as Trustee compares binding fields."""
    return value[:size].ljust(size, b"\0")


def check_binding(
    expected: Binding,
    *,
    report_data: bytes,
    init_data: bytes | None,
    measurement: bytes,
    init_data_name: str,
) -> None:
    """Compare the evidence's report_data, initdata field and measurement with ``expected``.

    Raises :class:`ReportDataMismatch`, :class:`InitDataMismatch` or :class:`MeasurementMismatch`.
    """
    want = regularize(expected.report_data, len(report_data))
    if not hmac.compare_digest(want, report_data):
        raise ReportDataMismatch(
            f"report_data in the evidence is {report_data.hex()[:32]}…, expected {want.hex()[:32]}…"
        )
    if expected.init_data_digest is not None:
        if init_data is None:
            raise InitDataMismatch(f"the evidence has no {init_data_name} to bind the initdata digest")
        want_init = regularize(expected.init_data_digest, len(init_data))
        if not hmac.compare_digest(want_init, init_data):
            raise InitDataMismatch(
                f"{init_data_name} is {init_data.hex()}, expected the initdata digest {want_init.hex()}"
            )
    if expected.measurement is not None and not hmac.compare_digest(expected.measurement, measurement):
        raise MeasurementMismatch(f"measurement is {measurement.hex()}, expected {expected.measurement.hex()}")
