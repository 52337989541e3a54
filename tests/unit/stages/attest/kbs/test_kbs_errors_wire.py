"""Every KBS error renders as Trustee's error body with its status, through the HTTP adapter."""

from __future__ import annotations

import inspect
import json

import pytest

from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.kbs import ERROR_TYPE_PREFIX, ErrorInformation
from ccpipe.stages.attest.kbs import errors
from ccpipe.stages.attest.kbs.http import error_response

TRUSTEE_VARIANTS = {
    "AdminAuthInitialization", "AdminAuthAccess", "AttestationError", "HTTPFailed", "HTTPSFailed",
    "InvalidRequestPath", "JweError", "PluginManagerInitialization", "PluginNotFound", "PluginInternalError",
    "PolicyDeny", "ParsePolicyError", "PolicyEngineError", "RvpsError", "SerdeError",
    "StorageBackendInitialization", "TokenNotFound", "TokenVerifierError", "PrometheusError",
}
SERVER_ERRORS = [
    cls for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.KbsError)
]


@pytest.mark.parametrize("cls", SERVER_ERRORS, ids=lambda c: c.__name__)
def test_kbs_error_renders_as_trustee_body(cls: type[errors.KbsError]) -> None:
    exc = cls("what was wrong")
    resp = error_response(exc)
    body = ErrorInformation.model_validate(json.loads(resp.body))  # type: ignore[arg-type]
    assert body.type == ERROR_TYPE_PREFIX + cls.variant and cls.variant in TRUSTEE_VARIANTS
    assert body.detail == "what was wrong" and resp.status == cls.status
    assert resp.content_type == "application/json"
    # 401 makes a CoCo guest re-attest, 404 means "no such path": only the documented exceptions differ
    assert cls.status in (401, 404) or cls in (errors.MalformedBody, errors.BodyTooLarge, errors.AdminBodyInvalid,
                                                errors.AuditUnavailable, errors.AuthRateExceeded)


def test_kbs_foreign_error_is_an_internal_error() -> None:
    resp = error_response(CcpipeError("boom"))
    assert resp.status == 500 and json.loads(resp.body)["type"].endswith("/PluginInternalError")  # type: ignore[arg-type]


def test_kbs_client_refusal_keeps_the_server_type() -> None:
    exc = errors.KbsRefused("refused", status=401, error_type=ERROR_TYPE_PREFIX + "PolicyDeny")
    assert exc.variant == "PolicyDeny" and exc.status == 401 and not isinstance(exc, errors.KbsUnavailable)
    assert issubclass(errors.AuditUnavailable, TransientError)
