"""schemathesis hooks for the audit API contract run (loaded through ``SCHEMATHESIS_HOOKS``).

OpenAPI cannot say that one parameter must not exceed another, so schemathesis's
``positive_data_acceptance`` check (ST202) counts two documented refusals as failures:

* ``since`` after ``until`` (``/api/v1/events``, ``/api/v1/overview``): "before since is refused (400)";
* a consistency proof ``from`` a size larger than ``to`` (``to`` defaults to the latest
  checkpoint's size): "larger than to is refused (400)".

:func:`filter_failure` drops an ST202 only when the request really broke that rule and the answer
is the 400 naming it; every other failure, of every check, stays. schemathesis's own documentation
suggests allowing the status for the whole operation instead, which would also hide a wrongly
refused request that breaks no rule.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

_CONSISTENCY_REFUSAL = re.compile(r"no consistency proof from (\d+) to (\d+): from must not be larger than to")


def _error_message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return ""


def _when(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def breaks_a_documented_cross_parameter_rule(path: str, query: dict[str, Any], message: str) -> bool:
    """Whether a 400 with ``message`` to ``path?query`` is the refusal the document announces."""
    if path in ("/api/v1/events", "/api/v1/overview"):
        since, until = _when(query.get("since")), _when(query.get("until"))
        return since is not None and until is not None and since > until and \
            message.startswith(f"since {query['since']} is after until {query['until']}")
    if path == "/api/v1/consistency":
        m = _CONSISTENCY_REFUSAL.match(message)
        if m is None or m.group(1) != str(query.get("from")):
            return False
        size1, size2 = int(m.group(1)), int(m.group(2))
        return size1 > size2 and ("to" not in query or m.group(2) == str(query["to"]))
    return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but an ST202 that is a documented cross-parameter refusal (see the module)."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    return not breaks_a_documented_cross_parameter_rule(case.operation.path, dict(case.query or {}),
                                                        _error_message(response))
