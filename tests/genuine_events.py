"""Publish test events as the pipeline's components would: signed by the component allowed to emit each type.

Consumers act only on events signed by a registered key of a component that may emit their type
(:mod:`ccpipe.pipeline.event_trust`); a test that stands in for an earlier stage publishes through
:func:`genuine_publisher`, which names that component as the event's source and signs with its key
in the data directory the stages under test read their keyring from.
"""

from __future__ import annotations

from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import PubAck

from ccpipe.pipeline.bus import EventPublisher
from ccpipe.pipeline.settings import load_settings
from ccpipe.pipeline.signing import event_signer
from ccpipe.schemas.emitters import EMITTERS
from ccpipe.schemas.envelope import Event, Source


def as_emitter(event: Event) -> Event:
    """``event`` with a source component that may emit its type (the first in the table)."""
    allowed = sorted(c.value for c in EMITTERS[event.type])
    if event.source.component in allowed:
        return event
    return event.model_copy(update={"source": Source(component=allowed[0], instance=event.source.instance)})


class GenuinePublisher(EventPublisher):
    """An :class:`EventPublisher` that publishes every event :func:`as_emitter`, signed."""

    async def publish(self, event: Event, msg_id: str | None = None, headers: dict[str, str] | None = None) -> PubAck:
        """Store ``as_emitter(event)``, signed by that component's key."""
        return await super().publish(as_emitter(event), msg_id, headers)


def genuine_publisher(js: JetStreamContext, data_dir: Path | None = None) -> GenuinePublisher:
    """A :class:`GenuinePublisher` signing with the keys under ``data_dir`` (default: the configured one)."""
    return GenuinePublisher(js, signer=event_signer(data_dir or load_settings().data_dir))
