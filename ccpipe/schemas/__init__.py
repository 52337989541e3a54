"""The contract of ccpipe: every message and record as a pydantic v2 model.

Imports nothing of the project. Everything else may import it.
"""

from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.envelope import Event, Source, Subject, derived_msg_id, input_filter, subject_for
from ccpipe.schemas.errors import CcpipeError, ConfigurationError, FailureReason, InvalidInput, TransientError
from ccpipe.schemas.events import PAYLOAD_MODELS, EventType
from ccpipe.schemas.workload import TeeType, WorkloadSpec, parse_workload_spec

__all__ = [
    "PAYLOAD_MODELS",
    "CcpipeError",
    "ConfigurationError",
    "Event",
    "EventType",
    "FailureReason",
    "InvalidInput",
    "Source",
    "Subject",
    "TeeType",
    "TransientError",
    "WorkloadSpec",
    "canonical_json",
    "derived_msg_id",
    "input_filter",
    "parse_workload_spec",
    "subject_for",
]
