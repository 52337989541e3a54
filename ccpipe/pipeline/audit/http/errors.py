"""Errors of the audit HTTP API, and the one function that maps any ccpipe error to a status.

Every error body is ``{"error": {"code", "message", "hint"}}`` (:class:`~.models.ErrorBody`).

Imports ``ccpipe.schemas.errors`` and :mod:`ccpipe.pipeline.audit` only.
"""

from __future__ import annotations

from ccpipe.pipeline.audit.errors import AuditError, CheckpointError, InvalidProof, NotCovered, StoreError
from ccpipe.schemas.errors import CcpipeError, InvalidInput


class ApiError(AuditError):
    """Base of the errors the API itself raises about a request."""

    code = "audit.api.error"


class BadRequest(ApiError):
    """A path part or query parameter is malformed (a bad digest, limit, time, event type…)."""

    code = "audit.api.bad_request"
    default_hint = "see /openapi.json for the accepted parameters and their formats"


class NotFound(ApiError):
    """The event, checkpoint or resource asked for is not in the trail."""

    code = "audit.api.not_found"
    default_hint = "check the id; the trail holds only events that were published on ccpipe.evt.>"


class Busy(ApiError):
    """Too many heavy queries are already running or waiting: answered 503 with ``Retry-After``."""

    code = "audit.api.busy"
    default_hint = "retry after the Retry-After seconds, or narrow the query (more filters, a smaller limit)"
    retry_after_s = 1
    """What ``Retry-After`` says: heavy queries take well under a second each, so a slot frees soon."""


def http_status(error: CcpipeError) -> int:
    """The HTTP status for ``error``: 400 bad input, 404 unknown, 409 not yet covered by a
    checkpoint, 503 busy or store unavailable or damaged, 500 anything else."""
    if isinstance(error, BadRequest | InvalidInput):
        return 400
    # The index's own refusal of a query (a bad limit, …) is a bad request too; matched by
    # code family so this module need not import the query backend.
    if error.code.startswith("audit.query."):
        return 400
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, NotCovered):
        return 409
    if isinstance(error, Busy | StoreError | CheckpointError | InvalidProof):
        return 503
    return 500
