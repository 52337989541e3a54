"""One mapping from ccpipe errors to HTTP statuses."""

from __future__ import annotations

import pytest

from ccpipe.pipeline.audit.errors import AuditError, CheckpointError, InvalidProof, NotCovered, StoreError
from ccpipe.pipeline.audit.http.errors import BadRequest, NotFound, http_status
from ccpipe.pipeline.audit.query import QueryError
from ccpipe.schemas.errors import CcpipeError, InvalidInput


@pytest.mark.parametrize(("error", "status"), [
    (BadRequest("x"), 400),
    (InvalidInput("x"), 400),
    (QueryError("limit 0"), 400),
    (NotFound("x"), 404),
    (NotCovered("x"), 409),
    (StoreError("x"), 503),
    (CheckpointError("x"), 503),
    (InvalidProof("x"), 503),
    (AuditError("x"), 500),
    (CcpipeError("x"), 500),
])
def test_status_of_each_error_family(error: CcpipeError, status: int) -> None:
    assert http_status(error) == status


def test_api_errors_have_stable_codes_and_hints() -> None:
    assert (BadRequest("x").code, NotFound("x").code) == ("audit.api.bad_request", "audit.api.not_found")
    assert BadRequest("x").hint and NotFound("x").hint
