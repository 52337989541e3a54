"""The deploy stage's incremental view of the trail.

Stage handlers receive only the input event, but the schedule step must know the placements
of earlier workloads: :func:`refresh_view` folds the events stored since the last call into a
:class:`~ccpipe.stages.deploy.scheduler.PlacementView`.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from ccpipe.pipeline.event_trust import InputTrust
from ccpipe.pipeline.reader import iter_events
from ccpipe.stages.deploy.scheduler import PlacementView


async def refresh_view(js: JetStreamContext, view: PlacementView, trust: InputTrust) -> PlacementView:
    """Fold every event stored after ``view.last_seq`` into ``view``.

    Unreadable events, and events ``trust`` refuses (a forged ``pushed`` must not get a placement),
    are skipped.
    """
    start = view.last_seq + 1 if view.last_seq else None
    async for stored in iter_events(js, start_seq=start):
        event = stored.trusted_by(trust) if stored.event is not None else None
        if event is not None:
            view.apply(event, stored.seq)
        else:
            view.last_seq = max(view.last_seq, stored.seq)
    return view
