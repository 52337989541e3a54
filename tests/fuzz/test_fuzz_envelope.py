"""Fuzz: event envelopes parsed from the bytes a NATS message carries (``Event.from_wire``).

Any client on the bus can publish; whatever it sends, a consumer gets an :class:`Event` or an
:class:`InvalidInput` naming the problem.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, WorkloadExited
from tests.fuzz.fuzz_helpers import JSON_VALUES, TIMEOUT_S, fuzz_settings, json_bytes_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

SEED = json.loads(
    Event(
        type=EventType.WORKLOAD_EXITED, workload_id="hello-0123456789", source=Source(component="runner"),
        payload=WorkloadExited(node_id="n1", exit_code=0, duration_s=1.5, output_digest="sha256:" + "0f" * 32),
    ).canonical_bytes()
)


@st.composite
def _retyped(draw: st.DrawFn) -> bytes:
    """The seed relabelled as any event type, with a random payload: reaches every payload model."""
    doc = {**SEED, "type": draw(st.sampled_from([t.value for t in EventType])), "payload": draw(JSON_VALUES)}
    return json.dumps(doc).encode()


@fuzz_settings()
@given(st.one_of(json_bytes_mutations(SEED), _retyped()))
def test_fuzz_event_from_wire_parses_or_raises_invalid_input(data: bytes) -> None:
    parses_or_refuses(Event.from_wire, data, InvalidInput)
