"""What ``/readyz`` asks: is every NATS connection this process holds open connected?

The bus registers each connection it opens (:func:`track_connection`); a closed or collected one
drops out by itself. Kept apart from :mod:`.http` so the bus does not import aiohttp's server.
"""

from __future__ import annotations

import weakref

from nats.aio.client import Client as NatsClient

_connections: weakref.WeakKeyDictionary[NatsClient, str] = weakref.WeakKeyDictionary()


def track_connection(client: NatsClient, name: str) -> None:
    """Count ``client`` in ``/readyz`` until it is closed (or collected)."""
    _connections[client] = name


def not_ready() -> list[str]:
    """Names of the open NATS connections that are not connected now (reconnecting)."""
    return sorted(name for client, name in list(_connections.items())
                  if not client.is_closed and not client.is_connected)
