"""The contract of ccpipe: every message and record as a pydantic v2 model.

Imports nothing of the project. Everything else may import it.
"""

from schemas.canonical import canonical_json
from schemas.envelope import Event, Source, Subject, derived_msg_id, input_filter, subject_for
from schemas.errors import CcpipeError, ConfigurationError, FailureReason, InvalidInput, TransientError
from schemas.events import PAYLOAD_MODELS, EventType
from schemas.workload import TeeType, WorkloadSpec, parse_workload_spec

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
