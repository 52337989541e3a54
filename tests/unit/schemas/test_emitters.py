"""The emitters table: every event type has an emitter, and the helpers read it both ways."""

from __future__ import annotations

from ccpipe.schemas.emitters import EMITTERS, Component, emitted_by, may_emit
from ccpipe.schemas.events import EventType


def test_every_event_type_has_at_least_one_emitter() -> None:
    assert set(EMITTERS) == set(EventType)
    assert all(EMITTERS[t] for t in EventType)


def test_the_key_release_and_build_rules_of_issue_19() -> None:
    assert emitted_by(Component.BUILD) == {EventType.BUILT, EventType.FAILED}
    assert {t for t in emitted_by(Component.KBS)} == {
        t for t in EventType if t.value.startswith(("attestation.", "key.", "kbs.", "node."))
    }
    assert not may_emit(Component.BUILD, EventType.KEY_RELEASED)
    assert emitted_by(Component.AUDIT) == frozenset()


def test_emitted_by_and_may_emit_agree_with_the_table() -> None:
    for component in Component:
        assert emitted_by(component) == {t for t in EventType if may_emit(component, t)}
