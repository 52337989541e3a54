"""The CloudEvents attributes of ccpipe's wire form that need no model, and the ``submitted`` event built without one.

:mod:`ccpipe.schemas.cloudevents` maps every event to its CloudEvent through the models; this
module holds the constants and the ``source`` URI they share, and :func:`submitted_cloudevent`,
the one event ``ccpipe submit`` publishes, as the same JSON document
``Event(...).to_cloudevent()`` gives, built from plain values: the git hook runs ``ccpipe
submit`` on every push, and loading the models costs more than the rest of it.
``tests/unit/schemas/test_cloudevent_wire.py`` checks the canonical bytes of both agree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
"""The NATS ``Content-Type`` header of a structured-mode event (the NATS protocol binding)."""
DATA_CONTENT_TYPE = "application/json"
SOURCE_PREFIX = "/ccpipe/"
"""Every ``source`` is a URI-reference under this path: ``/ccpipe/<component>[/<instance>]``."""
SUBMITTED_CLOUDEVENT_TYPE = "dev.cdevents.build.queued.0.2.0"
"""The CloudEvents ``type`` of ``submitted`` (``CLOUDEVENT_TYPES``; a test keeps them equal)."""
COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
"""``CommitId`` of :mod:`ccpipe.schemas.events`: a full git object id (SHA-1 or SHA-256)."""


def source_uri(component: str, instance: str = "") -> str:
    """The ``source`` naming a component (and its instance, when there is one)."""
    uri = SOURCE_PREFIX + quote(component, safe="")
    return f"{uri}/{quote(instance, safe='')}" if instance else uri


def rfc3339_utc(moment: datetime) -> str:
    """``moment`` (aware) as the models write a UTC time: ``…T…[.ffffff]Z``."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def submitted_cloudevent(*, event_id: str, workload_id: str, occurred_at: datetime, pusher: str,
                         payload: dict[str, Any]) -> dict[str, Any] | None:
    """The CloudEvent of a ``submitted`` event emitted by ``submit`` as ``pusher``, or None when unsure.

    ``payload`` is the ``Submitted`` payload in JSON form (``spec`` as :func:`ccpipe.schemas.spec_rules.plain_spec`
    gives it). None when a value is one the model would refuse (``new_commit`` not a full
    object id, a field that is not a string): the caller then builds the event with the model.
    """
    strings = ("repo", "ref", "old_commit", "new_commit", "pusher")
    if set(payload) != {*strings, "spec"} or not all(type(payload[k]) is str for k in strings):
        return None
    if not COMMIT_RE.match(payload["new_commit"]) or type(pusher) is not str:
        return None
    return {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source_uri("submit", pusher),
        "type": SUBMITTED_CLOUDEVENT_TYPE,
        "subject": workload_id,
        "time": rfc3339_utc(occurred_at),
        "datacontenttype": DATA_CONTENT_TYPE,
        "correlationid": workload_id,
        "data": payload,
        "commit": payload["new_commit"],
    }
